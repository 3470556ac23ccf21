//! Create a sandbox, do some work, pause it, print its id.
//!
//! `cargo run -p stasis-client --example create_pause`
//! (configured by STASIS_API_URL / STASIS_API_KEY or E2B_API_URL / E2B_API_KEY).
use stasis_client::Sandbox;

#[tokio::main]
async fn main() -> stasis_client::Result<()> {
    let sandbox = Sandbox::create().await?;

    // Do some work
    sandbox
        .commands()
        .run(r#"echo "Hello World" > /tmp/file.txt"#)
        .await?;

    // Pause the sandbox: its memory and filesystem are kept
    sandbox.beta_pause().await?;

    // Save the sandbox ID for later
    println!("Sandbox ID: {}", sandbox.sandbox_id());
    Ok(())
}
