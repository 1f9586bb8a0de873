//! The `feedwatch` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    feedwatch::fetch::install_crypto_provider();
    feedwatch::cli::main()
}
