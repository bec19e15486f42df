//! The `popferry` binary: parses the command line, sets up logging, runs a
//! subcommand and maps its outcome to an exit status (0 all went well, 1
//! something failed, 2 the command line or configuration is wrong).
//!
//! Only this file and `cli/` know clap; logs go to stderr, what a command
//! reports goes to stdout.

#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::string_slice))]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(e) = cli::telemetry::init(args.log_format, args.log_level.as_deref()) {
        eprintln!("popferry: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popferry: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(cli::execute(args));
    // Blocking tasks (a DNS lookup, a file write) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::from(outcome.code())
}
