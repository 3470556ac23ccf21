//! Code-interpreter state survives a pause: `x = 42`, pause, connect, `x` → 42.
//!
//! `cargo run -p stasis-client --example code_interpreter`
//! (needs the `code-interpreter-v1` template on the server).
use stasis_client::code::CODE_INTERPRETER_TEMPLATE;
use stasis_client::Sandbox;

#[tokio::main]
async fn main() -> stasis_client::Result<()> {
    let sandbox = Sandbox::builder()
        .template(CODE_INTERPRETER_TEMPLATE)
        .create()
        .await?;
    sandbox.run_code("x = 42").await?;

    // Pause: the interpreter's memory goes to disk with the sandbox
    sandbox.beta_pause().await?;
    println!("Sandbox ID: {}", sandbox.sandbox_id());

    // Resume and read the variable back
    let sandbox = Sandbox::connect(sandbox.sandbox_id()).await?;
    let execution = sandbox.run_code("x").await?;
    println!("x = {}", execution.text().unwrap_or("<no result>"));

    sandbox.kill().await?;
    Ok(())
}
