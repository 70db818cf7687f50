//! `otau-operator crds`.

use std::process::ExitCode;

/// Arguments of `crds`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints every CRD as YAML.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("not implemented yet");
    ExitCode::FAILURE
}
