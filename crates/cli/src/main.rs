//! The `inferencelab` binary: parse the command line, run the subcommand, print errors once.

mod cli;
mod commands;
mod output;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(err) = commands::dispatch(args) {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}
