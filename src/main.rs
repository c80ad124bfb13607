//! pennant binary: parse flags, then run the command (`pennant::cmd`). The same binary is the
//! kubectl plugin when named `kubectl-pennant` (`kubectl pennant get all`).

use pennant::cmd::normalize_args;

/// mimalloc returns the memory freed after a burst (the initial sync of a fleet, a release of
/// many Canaries at once) to the system, where glibc's malloc kept it: the idle RSS at 100
/// Canaries is 5 MiB lower (docs/bench/canary.md, "Memory").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors print as one line (`Error: …`, [`pennant::cmd::describe`]) and exit 1.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = pennant::cmd::parse(normalize_args(std::env::args()));
    match pennant::cmd::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", pennant::cmd::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
