//! The `otau-operator` command line: thin wiring over the library.
#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rolls software packages out to Exosite IoT device fleets in waves, from Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "otau-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (IoTConnector, SoftwarePackage, Rollout) as YAML.
    Crds(cmd::crds::Args),
    /// Serve a local Exosite platform (device API, management API, content, GraphQL, events).
    Emulator(cmd::emulator::Args),
    /// Run the operator: reconcile IoTConnectors and SoftwarePackages until SIGTERM/SIGINT.
    Run(cmd::run::Args),
    /// What-if run of a Rollout on a simulated fleet in virtual time: waves, pauses, timings.
    Simulate(cmd::simulate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => cmd::crds::run(args),
        Command::Emulator(args) => cmd::emulator::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
    }
}
