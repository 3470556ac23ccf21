//! Create a sandbox that pauses itself after 10 minutes of inactivity.
//!
//! `cargo run -p stasis-client --example auto_pause`
use std::time::Duration;

use stasis_client::{AutoPause, Sandbox};

#[tokio::main]
async fn main() -> stasis_client::Result<()> {
    let sandbox = Sandbox::builder()
        .auto_pause(AutoPause {
            enabled: true,
            timeout: Some(Duration::from_secs(10 * 60)), // 10 minutes
        })
        .create()
        .await?;

    // Do some work
    let out = sandbox.commands().run(r#"echo "Hello World""#).await?;
    print!("{}", out.stdout);

    // The sandbox pauses by itself after 10 minutes of inactivity;
    // reconnect later with Sandbox::connect(id).
    println!("Sandbox ID: {}", sandbox.sandbox_id());
    Ok(())
}
