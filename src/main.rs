//! pennant binary: parse flags, then run the command (`pennant::cmd`). The same binary is the
//! kubectl plugin when named `kubectl-pennant` (`kubectl pennant get all`).

use pennant::cmd::normalize_args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = pennant::cmd::parse(normalize_args(std::env::args()));
    pennant::cmd::run(cli).await
}
