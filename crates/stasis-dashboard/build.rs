//! Embeds the front-end bundle (`web/dist`, made by `scripts/build-dashboard.sh`) into
//! the crate: `$OUT_DIR/bundle.rs` lists every file with its bytes. Without a bundle the
//! list is empty and the dashboard answers a page that says how to build it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let dist = web.join("dist");
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        println!("cargo::rerun-if-changed={}", dist.display());
        collect(&dist, &dist, &mut files);
        files.sort();
    } else {
        // Only the sources are there (no node_modules yet): cheap to watch, and the
        // bundle's arrival changes it.
        println!("cargo::rerun-if-changed={}", web.display());
    }
    let mut out = String::from("/// The bundle's files: path below `web/dist`, contents.\n");
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .expect("writing to a string");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("bundle.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue; // the build script's stamp
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).expect("below the root");
            let rel = rel
                .to_str()
                .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()));
            files.push((rel.replace('\\', "/"), path.clone()));
        }
    }
}
