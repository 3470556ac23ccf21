//! Resume a paused sandbox by id, check its state survived, kill it.
//!
//! `cargo run -p stasis-client --example connect_cat_kill -- SANDBOX_ID`
use stasis_client::Sandbox;

#[tokio::main]
async fn main() -> stasis_client::Result<()> {
    let Some(sandbox_id) = std::env::args().nth(1) else {
        eprintln!("usage: connect_cat_kill SANDBOX_ID (the id create_pause printed)");
        std::process::exit(2);
    };

    // Connect to the paused sandbox: it resumes where it stopped
    let sandbox = Sandbox::connect(&sandbox_id).await?;

    // Verify the state is restored
    let result = sandbox.commands().run("cat /tmp/file.txt").await?;
    print!("{}", result.stdout); // Hello World

    sandbox.kill().await?;
    Ok(())
}
