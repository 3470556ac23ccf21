//! Remove a sandbox (paused or running) for good, by id.
//!
//! `cargo run -p stasis-client --example kill_by_id -- SANDBOX_ID`
use stasis_client::Sandbox;

#[tokio::main]
async fn main() -> stasis_client::Result<()> {
    let Some(sandbox_id) = std::env::args().nth(1) else {
        eprintln!("usage: kill_by_id SANDBOX_ID");
        std::process::exit(2);
    };

    // Method 1: kill with the sandbox object (connecting resumes it first)
    //   Sandbox::connect(&sandbox_id).await?.kill().await?;

    // Method 2: kill by id, without resuming
    let killed = Sandbox::kill_by_id(&sandbox_id).await?;
    println!("Killed: {killed}");
    Ok(())
}
