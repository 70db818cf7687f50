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
    Emulator(Box<cmd::emulator::Args>),
    /// Run the operator: reconcile IoTConnectors, SoftwarePackages and Rollouts until a signal.
    ///
    /// Checks each IoTConnector's credentials; uploads and registers each SoftwarePackage on its
    /// connector; rolls each Rollout out in waves: writes `config_otau` to the devices of the
    /// current wave (rate-limited), reads their `otau_in` reports by polling the connector and
    /// from signed device events pushed to --push-addr, pauses or aborts when failures pass the
    /// threshold, and writes the Rollout status, Events and metrics. Serves /metrics, /livez and
    /// /readyz; with --leader-elect, runs the controllers only while holding the Lease. Needs
    /// the CRDs installed (kubectl apply --server-side -f crds/). Stops gracefully on SIGTERM or
    /// Ctrl-C; a second signal exits at once.
    Run(Box<cmd::run::Args>),
    /// What-if run of a Rollout on a simulated fleet in virtual time: waves, pauses, timings.
    Simulate(cmd::simulate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => cmd::crds::run(args),
        Command::Emulator(args) => cmd::emulator::run(*args),
        Command::Run(args) => cmd::run::run(*args),
        Command::Simulate(args) => cmd::simulate::run(args),
    }
}
