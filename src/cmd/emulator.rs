//! `otau-operator emulator`.

use std::process::ExitCode;

/// Arguments of `emulator`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Serves the emulator until interrupted.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("not implemented yet");
    ExitCode::FAILURE
}
