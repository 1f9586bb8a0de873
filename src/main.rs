//! The `feedwatch` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    feedwatch::fetch::install_crypto_provider();
    feedwatch::cli::main()
}

/// glibc's malloc gives each thread that allocates while another holds an arena an
/// arena of its own, up to eight per core, and each keeps what it once held. The
/// daemon's allocating threads (tokio's workers, the blocking pool that parses and
/// prepares, SQLite's connection threads) filled about 13 MiB of a 60 MiB peak that
/// way on the benchmark farm (BENCHMARKS.md). Two arenas cost no measurable CPU
/// there. `MALLOC_ARENA_MAX` in the environment, if set, still decides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets one of the allocator's parameters; it runs before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
