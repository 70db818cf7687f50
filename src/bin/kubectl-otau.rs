//! `kubectl-otau`: the kubectl plugin (`kubectl otau ...` once on `PATH`). Everything is in
//! [`otau_operator::plugin`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use otau_operator::plugin::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}
