//! The `bets` binary: parse the CLI, run the command, map the outcome to an
//! exit code (see the README's table).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`bets list | head`)
    // would panic; a command-line tool should just stop, as `ls | head` does.
    #[cfg(unix)]
    // SAFETY: called first in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before any thread starts: candle's own CPU pool would spin beside rayon's.
    bets::engine::configure_cpu_threads();
    // Freed memory stays mapped: candle allocates per op, and re-faulting pages cost a fifth of training time.
    bets::engine::configure_allocator();
    let cli = bets::cli::Cli::parse();
    bets::app::init_logging(cli.quiet);
    match bets::app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(bets::error::exit_kind(&err) as u8)
        }
    }
}
