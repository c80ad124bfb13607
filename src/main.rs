//! pennant binary: parse flags, then run the command (`pennant::cmd`).

use clap::Parser;
use pennant::cmd::{Cli, normalize_args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    pennant::cmd::run(cli).await
}
