//! The OCI prestart hook that plugs a sandbox into the host network. runc runs it at
//! `run` and again at `restore`, with the container state on stdin.
#![forbid(unsafe_code)]

fn main() {
    if let Err(e) = stasis_runtime::net::prestart_hook(std::io::stdin().lock()) {
        let mut msg = format!("stasis-netns-hook: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
