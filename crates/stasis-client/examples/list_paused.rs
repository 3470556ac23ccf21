//! List the paused sandboxes.
//!
//! `cargo run -p stasis-client --example list_paused`
use stasis_client::{Sandbox, SandboxQuery, SandboxState};

#[tokio::main]
async fn main() -> stasis_client::Result<()> {
    let mut paginator = Sandbox::list(SandboxQuery::state([SandboxState::Paused]))?;
    let paused = paginator.next_items().await?;

    println!("Paused sandboxes: {}", paused.len());
    for s in &paused {
        println!(
            "{} template={} state={} started={}",
            s.sandbox_id,
            s.template_id,
            s.state.as_str(),
            s.started_at.to_rfc3339()
        );
    }
    Ok(())
}
