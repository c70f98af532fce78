//! The `inferencelab` binary: parse the command line, run the subcommand, print errors once.

mod cli;
mod commands;
mod output;

use clap::Parser;

fn main() {
    restore_sigpipe();
    let args = cli::Cli::parse();
    if let Err(err) = commands::dispatch(args) {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}

/// Die quietly on a closed pipe (`inferencelab ... | head`) like other Unix tools, instead of
/// panicking on the next print: Rust ignores SIGPIPE by default.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL installs no handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
