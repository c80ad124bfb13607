//! pennant binary: parse flags, then run the command (`pennant::cmd`). The same binary is the
//! kubectl plugin when named `kubectl-pennant` (`kubectl pennant get all`).

use pennant::cmd::normalize_args;

fn main() -> std::process::ExitCode {
    #[cfg(not(feature = "system-alloc"))]
    alloc::purge_freed_memory_at_once();
    run()
}

/// Errors print as one line (`Error: …`, [`pennant::cmd::describe`]) and exit 1.
#[tokio::main]
async fn run() -> std::process::ExitCode {
    let cli = pennant::cmd::parse(normalize_args(std::env::args()));
    match pennant::cmd::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", pennant::cmd::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The global allocator, mimalloc: it returns the memory freed after a burst (the initial sync
/// of a fleet, a release of many Canaries at once) to the system, where glibc's malloc kept it:
/// the idle RSS at 100 Canaries is 5 MiB lower (docs/bench/canary.md, "Memory"). Feature
/// `system-alloc` leaves glibc's malloc in place, for heap profilers that hook it (heaptrack).
#[cfg(not(feature = "system-alloc"))]
mod alloc {
    #[global_allocator]
    static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

    // mimalloc's `mi_option_purge_delay` (the `mi_option_e` enum of the mimalloc v3 that
    // libmimalloc-sys 0.1.49 builds, include/mimalloc.h); `tests::freed_memory_is_returned_at_once`
    // fails when the number names another option.
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }

    /// mimalloc by default purges freed pages 1 s (10 s in arenas) after they are freed, but
    /// only when it runs again later; an idle controller hardly allocates, so the pages of its
    /// start burst (the caches' first lists, the first reconcile of every Canary) stayed
    /// resident. Idle at 1000 Canaries: 160-183 MiB anonymous memory, 92-102 MiB with this,
    /// 70 MiB with this and without transparent huge pages (mimalloc's `no_thp`, Cargo.toml);
    /// docs/bench/canary.md, "Memory at 1000 Canaries".
    pub fn purge_freed_memory_at_once() {
        // SAFETY: mi_option_set only stores the value of a valid option of this mimalloc.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }

    #[cfg(test)]
    mod tests {
        /// This process's anonymous resident memory (bytes, `RssAnon` of /proc/self/status).
        fn anon() -> usize {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let kib: usize = status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            kib * 1024
        }

        #[test]
        fn freed_memory_is_returned_at_once() {
            super::purge_freed_memory_at_once();
            let before = anon();
            // 64 MiB in 4 KiB blocks, as a cache's objects, freed at once
            let blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|_| vec![1u8; 4096]).collect();
            let held = anon();
            drop(blocks);
            // an idle controller still allocates a little (a watch event, a timer)
            for _ in 0..100 {
                std::hint::black_box(vec![0u8; 64]);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let after = anon();
            assert!(
                held >= before + 60 * 1024 * 1024,
                "the blocks were resident: {before} -> {held}"
            );
            assert!(
                after < before + 16 * 1024 * 1024,
                "64 MiB freed, still resident: {before} -> {held} -> {after}"
            );
        }
    }
}
