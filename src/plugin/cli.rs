//! The command line: subcommands, flags and help text laid out like kubectl's own
//! (description, Examples, Options, Usage).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kubectl's help layout: what it does, examples, options, then usage.
const HELP: &str = "{about-with-newline}
Examples:
{before-help}{all-args}

Usage:
  {usage}
{after-help}";

const FOOTER: &str =
    "\nUse \"kubectl otau <command> --help\" for more information about a command.";

const ROOT_EXAMPLES: &str = "  # Where a rollout stands, wave by wave, redrawn as it changes
  kubectl otau status fw-2-1 --watch

  # Hold, continue, approve the next gated wave, or stop for good
  kubectl otau pause fw-2-1
  kubectl otau resume fw-2-1
  kubectl otau approve fw-2-1
  kubectl otau abort fw-2-1

  # Every rollout of every namespace, one line each
  kubectl otau list -A

  # The devices that failed, with their last report
  kubectl otau devices fw-2-1 --state failed";

/// `kubectl otau`: watch and drive otau.dev Rollouts.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-otau",
    bin_name = "kubectl otau",
    version,
    about = "Watch and drive otau.dev Rollouts (software delivered to device fleets in waves).",
    long_about = "Watch and drive otau.dev Rollouts (software delivered to device fleets in waves).\n\n\
                  Actions (pause, resume, approve, abort) write the one-shot annotations of \
                  docs/rollouts.md, exactly what a Git user can commit; the operator acts on \
                  each once. The plugin never writes status or spec.",
    help_template = HELP,
    before_help = ROOT_EXAMPLES,
    after_help = FOOTER,
    subcommand_help_heading = "Available Commands",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where to find the cluster, as kubectl takes it.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// If present, the namespace scope for this request (default: the context's namespace).
    #[arg(
        short = 'n',
        long,
        global = true,
        value_name = "NAMESPACE",
        help_heading = "Global Options"
    )]
    pub namespace: Option<String>,
    /// The name of the kubeconfig context to use.
    #[arg(
        long,
        global = true,
        value_name = "CONTEXT",
        help_heading = "Global Options"
    )]
    pub context: Option<String>,
    /// Path to the kubeconfig file to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global Options"
    )]
    pub kubeconfig: Option<PathBuf>,
}

/// Machine-readable output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show where a rollout stands: phase, conditions, waves, failures, what it waits for.
    #[command(
        help_template = HELP,
        long_about = "Show where a rollout stands: its phase and conditions, a table of waves (size, \
                      pending, notified, in progress, succeeded, failed, timed out, start and end), \
                      the success rate, recent failures, and what it waits for (an approval, a soak, \
                      another rollout, a person). With --watch the view is redrawn whenever the \
                      rollout changes (watch API, not polling) until it completes or is aborted, or \
                      until Ctrl-C. Exits 1 when a watched rollout ends aborted.",
        before_help = "  # Show the rollout fw-2-1 of the current namespace
  kubectl otau status fw-2-1

  # Follow it until it completes (or is aborted)
  kubectl otau status fw-2-1 --watch -n fleet

  # The whole object, for a script
  kubectl otau status fw-2-1 -o json"
    )]
    Status(StatusArgs),
    /// List rollouts with a one-line summary each.
    #[command(
        help_template = HELP,
        long_about = "List rollouts with a one-line summary each: package, phase, wave, device counts \
                      and success rate.",
        before_help = "  # Rollouts of the current namespace
  kubectl otau list

  # Rollouts of every namespace
  kubectl otau list -A"
    )]
    List(ListArgs),
    /// Show the wave plan: how many devices each wave covers.
    #[command(
        help_template = HELP,
        long_about = "Show the wave plan (the dry run of the split the operator keeps in status.plan): \
                      for each wave its new devices, the cumulative coverage, the approval gate and \
                      the soak.",
        before_help = "  # The plan of fw-2-1
  kubectl otau plan fw-2-1"
    )]
    Plan(NameArgs),
    /// Pause a rollout: no new device is notified until it is resumed.
    #[command(
        help_template = HELP,
        long_about = "Pause a rollout by writing the one-shot annotation otau.dev/pause with a new nonce. \
                      No new device is notified and no wave starts; devices already notified carry \
                      on. Lift it with `kubectl otau resume`. (In Git: spec.paused: true.)",
        before_help = "  # Pause fw-2-1
  kubectl otau pause fw-2-1"
    )]
    Pause(NameArgs),
    /// Resume a rollout paused by `pause` or by the failure threshold.
    #[command(
        help_template = HELP,
        long_about = "Resume a rollout by writing the one-shot annotation otau.dev/resume with a new nonce. \
                      It lifts a pause made with `kubectl otau pause` and an automatic pause after \
                      failures (accepting the failures so far). It does not override spec.paused: \
                      true, which only a spec change lifts.",
        before_help = "  # Resume fw-2-1
  kubectl otau resume fw-2-1"
    )]
    Resume(NameArgs),
    /// Abort a rollout for good: nothing more is written to any device.
    #[command(
        help_template = HELP,
        long_about = "Abort a rollout by writing the one-shot annotation otau.dev/abort with a new nonce. \
                      Terminal: no new device, no retry, no new wave. Devices already notified keep \
                      the manifest they were sent (nothing is rolled back). (In Git: spec.abort: true.)",
        before_help = "  # Abort fw-2-1
  kubectl otau abort fw-2-1"
    )]
    Abort(NameArgs),
    /// Approve a gated wave (by default the next one waiting).
    #[command(
        help_template = HELP,
        long_about = "Approve waves with requireApproval up to WAVE (numbered from 1) by writing the \
                      one-shot annotation otau.dev/approve: <WAVE>:<nonce>. Without WAVE, approves \
                      the first gated wave not yet approved. (In Git: spec.approvedWaves.)",
        before_help = "  # Approve the next gated wave of fw-2-1
  kubectl otau approve fw-2-1

  # Approve waves up to wave 3
  kubectl otau approve fw-2-1 3"
    )]
    Approve(ApproveArgs),
    /// List a rollout's devices and their last report, read from the platform.
    #[command(
        help_template = HELP,
        long_about = "List the devices a rollout targets, with their wave, their state as the operator \
                      counts it, the attempt they hold and their last otau_in report. Read from the \
                      platform with the connector's credentials: you need `get` on the connector's \
                      token Secret (the token is never printed).",
        before_help = "  # Every device of fw-2-1
  kubectl otau devices fw-2-1

  # Only the devices that failed
  kubectl otau devices fw-2-1 --state failed

  # As JSON
  kubectl otau devices fw-2-1 --state failed -o json"
    )]
    Devices(DevicesArgs),
}

/// `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The Rollout's name.
    #[arg(value_name = "ROLLOUT")]
    pub name: String,
    /// Redraw on every change until the rollout completes or is aborted (Ctrl-C to stop).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format: json or yaml (the whole Rollout). Not with --watch.
    #[arg(short = 'o', long, value_name = "FORMAT", conflicts_with = "watch")]
    pub output: Option<OutputFormat>,
}

/// `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// List the rollouts of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: json or yaml.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// Commands that take one Rollout name.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// The Rollout's name.
    #[arg(value_name = "ROLLOUT")]
    pub name: String,
    /// Output format: json or yaml.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// `approve`.
#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    /// The Rollout's name.
    #[arg(value_name = "ROLLOUT")]
    pub name: String,
    /// Approve waves up to this one (from 1); default: the first gated wave not yet approved.
    #[arg(value_name = "WAVE", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub wave: Option<u32>,
    /// Output format: json or yaml.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// A device state, as named in the Rollout's status counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Not notified yet, or a retry is due.
    Pending,
    /// Holds the manifest, no report yet.
    Notified,
    /// Reporting progress.
    #[value(name = "inProgress", alias = "in-progress")]
    InProgress,
    /// Installed the version.
    Succeeded,
    /// Its last allowed attempt reported an error.
    Failed,
    /// Reported INSTALL_ABORTED.
    Aborted,
    /// Its last allowed attempt got no final report in time.
    #[value(name = "timedOut", alias = "timed-out")]
    TimedOut,
    /// Already at the version; never notified.
    Skipped,
    /// Sent a report that cannot be parsed.
    Invalid,
    /// Not notified: installing another manifest right now (`policy.busyDevices: Wait`).
    Busy,
    /// Holds a manifest no SoftwarePackage of the connector produced, not notified.
    Foreign,
}

/// `devices`.
#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    /// The Rollout's name.
    #[arg(value_name = "ROLLOUT")]
    pub name: String,
    /// Only devices in this state.
    #[arg(long, value_name = "STATE")]
    pub state: Option<StateFilter>,
    /// Output format: json or yaml.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_reads_like_kubectl() {
        let help = Cli::command().render_long_help().to_string();
        let examples = help.find("Examples:").expect("Examples");
        let usage = help.find("Usage:").expect("Usage");
        assert!(examples < usage, "{help}");
        assert!(
            help.contains("kubectl otau status fw-2-1 --watch"),
            "{help}"
        );
        let mut root = Cli::command();
        root.build();
        let status = root.find_subcommand_mut("status").expect("status");
        let text = status.render_long_help().to_string();
        assert!(text.contains("Usage:\n  kubectl otau status"), "{text}");
        assert!(text.contains("--watch"), "{text}");
        assert!(
            text.contains("--kubeconfig <PATH>"),
            "global flags shown: {text}"
        );
        assert!(!text.contains("\n\n\n"), "no double blank lines: {text}");
    }

    #[test]
    fn flags_parse_like_kubectl() {
        let cli = Cli::try_parse_from([
            "kubectl-otau",
            "devices",
            "fw",
            "-n",
            "fleet",
            "--state",
            "timed-out",
            "--context",
            "prod",
        ])
        .expect("parse");
        assert_eq!(cli.global.namespace.as_deref(), Some("fleet"));
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        match cli.command {
            Command::Devices(d) => assert_eq!(d.state, Some(StateFilter::TimedOut)),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["kubectl-otau", "approve", "fw", "0"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-otau", "status", "fw", "-w", "-o", "json"]).is_err());
    }
}
