//! `otau-operator simulate`: a what-if run of a Rollout on a simulated fleet, in virtual time.
//!
//! The same rollout engine the controller uses runs against the emulator's platform model in
//! process (through the `Platform` adapter), with a simulated fleet of devices from a profile,
//! so a policy with days of soak time runs in seconds. See docs/simulate.md.

mod input;
mod memory;
mod progress;
mod report;
mod schema_check;
mod sim;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use otau_operator::api::parse_duration;
use otau_operator::emulator::fleet::Profile;
use otau_operator::engine::ParsedPolicy;

use input::{Documents, InputError, Located, line_of, read_files};
use report::{EXIT_BAD_INPUT, EXIT_STOPPED};
use sim::Scenario;

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A report for people, with progress bars while it runs (on a terminal).
    Text,
    /// One JSON document for scripts; no progress bars.
    Json,
}

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads the same YAML you would `kubectl apply`: multi-document files are fine; Secrets, ConfigMaps \
and IoTConnectors are read and ignored. The Rollout's SoftwarePackage must be among the files \
(its version is what devices report once installed); its files are not fetched: each is stood in \
for by a small placeholder on the simulated connector.

The run starts at 2025-01-01T00:00:00Z virtual time and moves the clock to the next moment \
something can change; it never waits on the real clock. The same files and seed give the same \
report, byte for byte.

Exit codes: 0 complete, 1 bad input, 2 paused (failure threshold, waiting for approval, or \
paused by spec), 3 aborted, 4 stopped without an outcome (a --max-* limit, or nothing left that \
could happen, e.g. no device matches the targets).

Example:
  otau-operator simulate -f examples/simulate-rollout.yaml -f examples/package-from-url.yaml \\
    --devices 10000 --profile examples/fleet-profile.yaml")]
pub struct Args {
    /// A YAML file with the Rollout, its SoftwarePackage, or both (repeat -f for more files).
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// The fleet profile (docs/fleet-profiles.md), e.g. examples/fleet-profile.yaml.
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,

    /// Fleet size, shared by the profile's `fraction` groups (groups with `count` keep theirs).
    #[arg(long, value_name = "N")]
    pub devices: Option<u64>,

    /// The fleet's seed (overrides the profile's). The device order comes from the Rollout's
    /// orderSeed (or <namespace>/<name>), as on a real cluster.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// The Rollout to run, when the files hold more than one.
    #[arg(long, value_name = "NAME")]
    pub rollout: Option<String>,

    /// Namespace of objects whose metadata names none (part of the default device order seed).
    #[arg(long, default_value = "default")]
    pub namespace: String,

    /// Id of the simulated IoT connector (lowercase letters and digits).
    #[arg(long, value_name = "ID", default_value = "simulated")]
    pub connector_id: String,

    /// How often device state is polled while devices are in flight (virtual time).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
    pub poll_interval: Duration,

    /// How often device state is polled while waiting (soak, approval, late joiners).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration_arg)]
    pub idle_poll_interval: Duration,

    /// Approve each gated wave when it is reached (as raising spec.approvedWaves would), instead
    /// of stopping with exit code 2.
    #[arg(long)]
    pub auto_approve: bool,

    /// Stop when the next step would be later than this much virtual time after the start.
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = duration_arg)]
    pub max_virtual_time: Duration,

    /// Fold every device into the engine's index at every poll, as a controller without push
    /// does, instead of only the devices whose resources changed (same report, slower).
    #[arg(long)]
    pub full_polls: bool,

    /// Print the wall time spent listing devices, reconciling, writing and running the fleet
    /// to stderr at the end (the report itself never holds wall-clock figures).
    #[arg(long)]
    pub timings: bool,

    /// Stop after this many steps (poll + reconcile + writes).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub max_steps: u64,

    /// When the run stops (paused, aborted, complete), delete the Rollout and apply it again, as
    /// a GitOps re-create does, and run it once more on the platform state the first run left:
    /// the same device order, an empty status, devices still holding what the first run wrote.
    /// Both reports are printed; the exit code is the second run's.
    #[arg(long)]
    pub reapply: bool,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn pick<'a, T>(
    found: &'a [Located<T>],
    wanted: Option<&str>,
    name_of: impl Fn(&T) -> String,
    what: &str,
) -> Result<&'a Located<T>, InputError> {
    let names: Vec<String> = found
        .iter()
        .map(|l| format!("{} ({})", name_of(&l.object), l.place))
        .collect();
    match wanted {
        Some(w) => found
            .iter()
            .find(|l| name_of(&l.object) == w)
            .ok_or_else(|| {
                InputError(format!(
                    "no {what} named {w:?} in the given files (found: {})",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ))
            }),
        None => match found {
            [one] => Ok(one),
            [] => Err(InputError(format!(
                "no {what} in the given files; pass the YAML that holds it with -f"
            ))),
            _ => Err(InputError(format!(
                "the files hold {} {what}s ({}); choose one with --rollout NAME",
                found.len(),
                names.join(", ")
            ))),
        },
    }
}

/// The field named at the start of an engine message (`spec.waves[1].soak: ...` -> `soak`).
fn field_key(message: &str) -> Option<&str> {
    let path = message.split_whitespace().next()?.trim_end_matches(':');
    if !path.starts_with("spec.") {
        return None;
    }
    let last = path.rsplit('.').next()?;
    last.split('[').next()
}

/// Reads the files and the profile into a scenario.
fn scenario(args: &Args) -> Result<(Scenario, Documents), InputError> {
    let docs = read_files(&args.files)?;
    let rollout = pick(
        &docs.rollouts,
        args.rollout.as_deref(),
        |r| r.metadata.name.clone().unwrap_or_default(),
        "Rollout",
    )?;
    let mut r = rollout.object.clone();
    let namespace = r
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| args.namespace.clone());
    r.metadata.namespace = Some(namespace.clone());
    if let Err(e) = ParsedPolicy::parse(&r.spec) {
        let message = e.to_string();
        let detail = message.trim_start_matches("invalid Rollout spec: ");
        let place = field_key(detail)
            .map_or_else(|| rollout.place.clone(), |key| line_of(&rollout.place, key));
        return Err(InputError(format!("{place}: Rollout: {detail}")));
    }
    let wanted = &r.spec.package_ref.name;
    let package = docs
        .packages
        .iter()
        .find(|p| {
            p.object.metadata.name.as_deref() == Some(wanted.as_str())
                && p.object.metadata.namespace.as_deref().unwrap_or(&namespace) == namespace
        })
        .ok_or_else(|| {
            let found: Vec<String> = docs
                .packages
                .iter()
                .map(|p| {
                    format!(
                        "{} ({})",
                        p.object.metadata.name.as_deref().unwrap_or(""),
                        p.place
                    )
                })
                .collect();
            InputError(format!(
                "{}: the Rollout uses SoftwarePackage {wanted:?} (spec.packageRef.name), which none of the files holds; add it with -f, e.g. -f examples/package-from-url.yaml (packages found: {})",
                line_of(&rollout.place, "packageRef"),
                if found.is_empty() { "none".into() } else { found.join(", ") }
            ))
        })?;
    let mut p = package.object.clone();
    p.metadata.namespace = Some(namespace);
    let profile = Profile::from_file(&args.profile)
        .map_err(|e| InputError(format!("{}: {e}", args.profile.display())))?;
    // Before the fleet is allocated: a count the machine cannot hold is refused with the
    // estimate, not met by an allocation failure.
    memory::check(&profile, args.devices, memory::available()).map_err(InputError)?;
    let scenario = Scenario {
        rollout: r,
        package: p,
        profile,
        devices: args.devices,
        seed: args.seed,
        connector_id: args.connector_id.clone(),
        poll_active: micros(args.poll_interval),
        poll_idle: micros(args.idle_poll_interval),
        auto_approve: args.auto_approve,
        max_virtual: micros(args.max_virtual_time),
        max_steps: args.max_steps.max(1),
        full_polls: args.full_polls,
        reapply: args.reapply,
    };
    Ok((scenario, docs))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("otau-operator simulate: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// Runs a simulation and prints its report; the exit code says how the rollout ended.
pub fn run(args: Args) -> ExitCode {
    let (scenario, docs) = match scenario(&args) {
        Ok(s) => s,
        Err(e) => return fail(&e.0),
    };
    for ignored in &docs.ignored {
        eprintln!("note: ignored {ignored}");
    }
    let has_fractions = scenario.profile.groups.iter().any(|g| g.fraction.is_some());
    if args.devices.is_some() && !has_fractions {
        eprintln!(
            "note: every group of {} has a fixed count; --devices is not used",
            args.profile.display()
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let text = args.output == OutputFormat::Text;
    let outcome = if text && std::io::stdout().is_terminal() {
        let mut bars = progress::Bars::stdout(scenario.rollout.spec.waves.len());
        runtime.block_on(sim::run(&scenario, &mut bars))
    } else {
        runtime.block_on(sim::run(&scenario, &mut progress::Silent))
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(message) => return fail(&message),
    };
    if args.timings {
        let t = &outcome.timings;
        eprintln!(
            "timings (wall): observe {:.2?}, reconcile {:.2?}, writes {:.2?}, fleet {:.2?}",
            t.observe, t.reconcile, t.write, t.fleet
        );
    }
    let profile_path = args.profile.display().to_string();
    let mut report = report::build(&scenario, &profile_path, &outcome);
    report.earlier_runs = outcome
        .earlier
        .iter()
        .map(|earlier| report::build(&scenario, &profile_path, earlier))
        .collect();
    let body = match args.output {
        OutputFormat::Text => report::text(&report),
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            Err(e) => return fail(&format!("cannot write the report as JSON: {e}")),
        },
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(body.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(EXIT_STOPPED);
    }
    ExitCode::from(report.result.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_name_their_field() {
        assert_eq!(field_key("spec.waves[1].soak: bad"), Some("soak"));
        assert_eq!(
            field_key("spec.policy.deviceTimeout must be at least 1s"),
            Some("deviceTimeout")
        );
        assert_eq!(field_key("spec.waves must list a wave"), Some("waves"));
        assert_eq!(field_key("something else"), None);
    }
}
