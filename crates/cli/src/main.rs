//! The `inferencelab` binary: parse the command line, run the subcommand, print errors once.

#[macro_use]
mod output;
mod cli;
mod commands;
mod progress;
mod split;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if !args.command.writes_to_network() {
        restore_sigpipe();
    }
    if let Err(err) = commands::dispatch(args) {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}

/// Die quietly on a closed pipe (`inferencelab ... | head`) like other Unix tools, instead of
/// panicking on the next print: Rust ignores SIGPIPE by default. Only for commands without
/// sockets: hyper writes requests and responses with `writev`, which raises SIGPIPE when the peer
/// has gone (a server answering 413 mid-upload), and that must fail one request, not kill the
/// process before its results are written. Those commands print through `output::out`, which
/// ends quietly on a closed stdout instead.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL installs no handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
