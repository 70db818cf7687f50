//! `otau-operator run`: the operator process.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use otau_operator::api::parse_duration;
use otau_operator::controller::Settings;
use otau_operator::controller::leader::LeaseConfig;
use otau_operator::controller::poller::PollIntervals;
use otau_operator::controller::rollout::RolloutOptions;
use otau_operator::controller::runtime::{self, RunOptions};
use otau_operator::net::outbound::OutboundPolicy;
use otau_operator::net::server::Limits;
use otau_operator::platform::RetryPolicy;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (local runs).
    Text,
    /// One JSON object per line (in a cluster).
    Json,
}

/// Arguments of `run`. Every flag also reads an environment variable (shown in `--help`);
/// none carries a secret: platform tokens come from the Secrets each IoTConnector names. The
/// help text of `run` itself is the doc comment of `Command::Run` in `src/main.rs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig file. Default: in-cluster configuration, else $KUBECONFIG or ~/.kube/config.
    #[arg(
        long,
        env = "OTAU_KUBECONFIG",
        value_name = "PATH",
        help_heading = "Kubernetes"
    )]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the current context).
    #[arg(
        long,
        env = "OTAU_KUBE_CONTEXT",
        value_name = "NAME",
        help_heading = "Kubernetes"
    )]
    context: Option<String>,

    /// Namespace to watch; repeat the flag or give a comma-separated list. Default: all.
    #[arg(
        long = "watch-namespace",
        env = "OTAU_WATCH_NAMESPACE",
        value_name = "NS",
        value_delimiter = ',',
        help_heading = "Kubernetes"
    )]
    watch_namespaces: Vec<String>,

    /// How long to wait at start for the CRDs to be Established.
    #[arg(long, env = "OTAU_CRD_WAIT_TIMEOUT", default_value = "60s", value_parser = duration, value_name = "DURATION", help_heading = "Kubernetes")]
    crd_wait_timeout: Duration,

    /// Name of this replica, sent in the User-Agent and as the Events' reporting instance.
    /// Default: $POD_NAME, else the host name.
    #[arg(
        long,
        env = "OTAU_INSTANCE",
        value_name = "NAME",
        help_heading = "Identity"
    )]
    instance: Option<String>,

    /// Address of the HTTP server for /metrics, /livez and /readyz (port 0 picks a free port;
    /// the address is logged).
    #[arg(
        long,
        env = "OTAU_METRICS_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR",
        help_heading = "Observability"
    )]
    metrics_addr: SocketAddr,

    /// Log format.
    #[arg(
        long,
        env = "OTAU_LOG_FORMAT",
        value_enum,
        default_value = "text",
        help_heading = "Observability"
    )]
    log_format: LogFormat,

    /// Log filter, e.g. `info` or `info,otau_operator=debug`. Default: $RUST_LOG, else `info`.
    #[arg(
        long,
        env = "OTAU_LOG_LEVEL",
        value_name = "FILTER",
        help_heading = "Observability"
    )]
    log_level: Option<String>,

    /// Allow every URL a user's object names (IoTConnector endpoints, package URL sources) to
    /// reach loopback, link-local and private addresses (refused by default against
    /// server-side request forgery). For local tests and air-gapped installations; prefer
    /// --platform-host, which trusts named hosts only.
    #[arg(long, env = "OTAU_ALLOW_PRIVATE_SOURCES", help_heading = "Outbound")]
    allow_private_sources: bool,

    /// A platform host a cluster admin trusts (repeat, or a comma list): its addresses pass the
    /// private-address check whatever they are, and a connector credential Secret may be sent
    /// to it without naming it in its otau.dev/allowed-hosts annotation (the Secret still
    /// needs the otau.dev/connector-credential=true label). Host names only, e.g.
    /// bizapi.hosted.exosite.io.
    #[arg(
        long = "platform-host",
        env = "OTAU_PLATFORM_HOSTS",
        value_name = "HOST",
        value_delimiter = ',',
        help_heading = "Outbound"
    )]
    platform_hosts: Vec<String>,

    /// The most bytes of one identity listing page or content list the platform client reads
    /// (other answers have fixed caps: docs/security.md).
    #[arg(long, env = "OTAU_PLATFORM_PAGE_MAX_BYTES", default_value = "32Mi", value_parser = bytes, value_name = "BYTES", help_heading = "Outbound")]
    platform_page_max_bytes: u64,

    /// The largest file a package may upload, in bytes (suffixes Ki, Mi, Gi allowed).
    #[arg(long, env = "OTAU_MAX_FILE_BYTES", default_value = "512Mi", value_parser = bytes, value_name = "BYTES", help_heading = "Packages")]
    max_file_bytes: u64,

    /// How long one URL download may take.
    #[arg(long, env = "OTAU_FETCH_TIMEOUT", default_value = "10m", value_parser = duration, value_name = "DURATION", help_heading = "Packages")]
    fetch_timeout: Duration,

    /// Folder where downloads are staged while their sha256 is checked and they are uploaded
    /// (room for --upload-concurrency files of --max-file-bytes). Default: the system temp
    /// folder.
    #[arg(
        long,
        env = "OTAU_WORK_DIR",
        value_name = "DIR",
        help_heading = "Packages"
    )]
    work_dir: Option<PathBuf>,

    /// The size of --work-dir, when it is limited (the chart passes its emptyDir's sizeLimit):
    /// the operator refuses to start when it is smaller than --max-file-bytes times
    /// --upload-concurrency.
    #[arg(long, env = "OTAU_WORK_DIR_SIZE_LIMIT", value_parser = bytes, value_name = "BYTES", help_heading = "Packages")]
    work_dir_size_limit: Option<u64>,

    /// Package files downloaded and uploaded at once, operator-wide: each holds a file of at
    /// most --max-file-bytes in --work-dir until its upload ended.
    #[arg(
        long,
        env = "OTAU_UPLOAD_CONCURRENCY",
        default_value_t = otau_operator::controller::DEFAULT_UPLOAD_CONCURRENCY as u16,
        value_parser = clap::value_parser!(u16).range(1..),
        value_name = "N",
        help_heading = "Packages"
    )]
    upload_concurrency: u16,

    /// The most per-device tags (`<productId>.<identity>`) on a package registration; a
    /// package's spec.registration.maxDeviceTags cannot go above it.
    #[arg(
        long,
        env = "OTAU_EXOSENSE_MAX_DEVICE_TAGS",
        default_value_t = 1000,
        value_name = "N",
        help_heading = "Packages"
    )]
    exosense_max_device_tags: u32,

    /// The least time between two rewrites of a package's ExoSense listing while a Rollout
    /// notifies devices (it lists the devices Rollouts notified; rewritten once more when a
    /// Rollout completes).
    #[arg(long, env = "OTAU_EXOSENSE_LISTING_INTERVAL", default_value = "5m", value_parser = duration, value_name = "DURATION", help_heading = "Packages")]
    exosense_listing_interval: Duration,

    /// How often a Ready package is compared with the platform again.
    #[arg(long, env = "OTAU_PACKAGE_RESYNC", default_value = "10m", value_parser = duration, value_name = "DURATION", help_heading = "Packages")]
    package_resync: Duration,

    /// A management token with less time left is reported in the IoTConnector's Ready message
    /// and a TokenExpiringSoon event.
    #[arg(long, env = "OTAU_TOKEN_EXPIRY_WARNING", default_value = "24h", value_parser = duration, value_name = "DURATION", help_heading = "Platform")]
    token_expiry_warning: Duration,

    /// Timeout of each platform request.
    #[arg(long, env = "OTAU_PLATFORM_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration, value_name = "DURATION", help_heading = "Platform")]
    platform_request_timeout: Duration,

    /// Tries of an idempotent platform request (the first included).
    #[arg(
        long,
        env = "OTAU_PLATFORM_MAX_TRIES",
        default_value_t = 5,
        value_name = "N",
        help_heading = "Platform"
    )]
    platform_max_tries: u32,

    /// Delay before the first retry of a platform request (doubles, with jitter).
    #[arg(long, env = "OTAU_PLATFORM_INITIAL_BACKOFF", default_value = "1s", value_parser = duration, value_name = "DURATION", help_heading = "Platform")]
    platform_initial_backoff: Duration,

    /// Longest delay between retries of a platform request.
    #[arg(long, env = "OTAU_PLATFORM_MAX_BACKOFF", default_value = "60s", value_parser = duration, value_name = "DURATION", help_heading = "Platform")]
    platform_max_backoff: Duration,

    /// Longest delay before a failed reconcile is tried again.
    #[arg(long, env = "OTAU_ERROR_BACKOFF_MAX", default_value = "60s", value_parser = duration, value_name = "DURATION", help_heading = "Platform")]
    error_backoff_max: Duration,

    /// Time between two listings of a connector's devices while a wave is in flight.
    #[arg(long, env = "OTAU_POLL_INTERVAL_ACTIVE", default_value = "10s", value_parser = duration, value_name = "DURATION", help_heading = "Rollouts")]
    poll_interval_active: Duration,

    /// Time between two listings when every Rollout on the connector waits (approval, soak,
    /// late joiners). Push, when configured, brings reports sooner.
    #[arg(long, env = "OTAU_POLL_INTERVAL_IDLE", default_value = "5m", value_parser = duration, value_name = "DURATION", help_heading = "Rollouts")]
    poll_interval_idle: Duration,

    /// Identities per listing page (the platform caps it; the emulator at 1000).
    #[arg(
        long,
        env = "OTAU_POLL_PAGE_SIZE",
        default_value_t = 1000,
        value_name = "N",
        help_heading = "Rollouts"
    )]
    poll_page_size: u32,

    /// config_otau writes in flight at once per Rollout (the connector's rate limit applies
    /// on top).
    #[arg(
        long,
        env = "OTAU_WRITE_CONCURRENCY",
        default_value_t = 32,
        value_name = "N",
        help_heading = "Rollouts"
    )]
    write_concurrency: usize,

    /// The least time between two checks that a package's content is still on the platform
    /// before devices are written outside a wave start (retries, late joiners, the rest of a
    /// wave); a wave start is always checked. At most one content listing per package and
    /// interval while such writes are due.
    #[arg(long, env = "OTAU_CONTENT_CHECK_INTERVAL", default_value = "1m", value_parser = duration, value_name = "DURATION", help_heading = "Rollouts")]
    content_check_interval: Duration,

    /// How long one reconcile keeps starting writes before it writes the status and goes on
    /// in the next pass.
    #[arg(long, env = "OTAU_WRITE_BUDGET", default_value = "5s", value_parser = duration, value_name = "DURATION", help_heading = "Rollouts")]
    write_budget: Duration,

    /// The least time between two status writes of one Rollout that change only counts
    /// (conditions, waves and control markers are written at once).
    #[arg(long, env = "OTAU_STATUS_MIN_INTERVAL", default_value = "1s", value_parser = duration, value_name = "DURATION", help_heading = "Rollouts")]
    status_min_interval: Duration,

    /// Address of the push receiver (POST /hooks/device2, its own listener; port 0 picks a
    /// free port, logged), or `off`.
    #[arg(long, env = "OTAU_PUSH_ADDR", default_value = "0.0.0.0:8081", value_parser = push_addr, value_name = "ADDR|off", help_heading = "Rollouts")]
    push_addr: PushAddr,

    /// Time a client has to send a request's complete headers, on every listener (metrics and
    /// health, push), counted from the connection (or the end of the previous response); idle
    /// and half-sent connections are closed after it. The time a request is handled is not
    /// limited.
    #[arg(long, env = "OTAU_LISTENER_HEADER_TIMEOUT", default_value = "10s", value_parser = duration, value_name = "DURATION", help_heading = "Listeners")]
    listener_header_timeout: Duration,

    /// Time a request body has to arrive completely after its headers (later: 408 from the
    /// push receiver).
    #[arg(long, env = "OTAU_LISTENER_BODY_TIMEOUT", default_value = "10s", value_parser = duration, value_name = "DURATION", help_heading = "Listeners")]
    listener_body_timeout: Duration,

    /// Connections each listener holds open at once; one more is accepted and closed at once
    /// (counted in otau_listener_refused_total{reason="connection_cap"}).
    #[arg(long, env = "OTAU_LISTENER_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), value_name = "N", help_heading = "Listeners")]
    listener_max_connections: u32,

    /// Requests each listener receives a body from at once; one more is answered 503 before
    /// its body is read. With the push receiver's largest body (260 KiB) this bounds the body
    /// bytes held.
    #[arg(long, env = "OTAU_LISTENER_MAX_BODIES_IN_FLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..), value_name = "N", help_heading = "Listeners")]
    listener_max_bodies_in_flight: u32,

    /// Run the controllers only while this replica holds the leader Lease (for two or more
    /// replicas). Without it, run exactly one replica.
    #[arg(long, env = "OTAU_LEADER_ELECT", help_heading = "Leader election")]
    leader_elect: bool,

    /// Name of the Lease.
    #[arg(
        long,
        env = "OTAU_LEASE_NAME",
        default_value = "otau-operator",
        value_name = "NAME",
        help_heading = "Leader election"
    )]
    lease_name: String,

    /// Namespace of the Lease. Default: $POD_NAMESPACE, else `default`.
    #[arg(
        long,
        env = "OTAU_LEASE_NAMESPACE",
        value_name = "NS",
        help_heading = "Leader election"
    )]
    lease_namespace: Option<String>,

    /// How long a Lease that is not renewed stays with its holder before another replica
    /// takes it.
    #[arg(long, env = "OTAU_LEASE_DURATION", default_value = "15s", value_parser = duration, value_name = "DURATION", help_heading = "Leader election")]
    lease_duration: Duration,

    /// How long the leader may go without a successful renewal before it stops writing and
    /// exits; must be shorter than --lease-duration.
    #[arg(long, env = "OTAU_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = duration, value_name = "DURATION", help_heading = "Leader election")]
    lease_renew_deadline: Duration,

    /// The URL at which followers reach this replica's push receiver once it leads (written
    /// into the Lease), e.g. http://10.1.2.3:8081. Default: http://<--push-addr> when that is a
    /// specific IP, else http://$POD_IP:<port>; with neither, followers answer pushes with 503.
    #[arg(long, env = "OTAU_PUSH_ADVERTISE_URL", value_parser = advertise, value_name = "URL", help_heading = "Leader election")]
    push_advertise_url: Option<String>,
}

fn advertise(text: &str) -> Result<String, String> {
    otau_operator::controller::leader::parse_advertise_url(text)
}

/// `--push-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct PushAddr(Option<SocketAddr>);

fn push_addr(text: &str) -> Result<PushAddr, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(PushAddr(None));
    }
    text.trim()
        .parse()
        .map(|a| PushAddr(Some(a)))
        .map_err(|e| format!("{text:?} is not an address such as 0.0.0.0:8081, nor off: {e}"))
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// Bytes as a whole Kubernetes quantity: `1048576`, `512Mi`, `2Gi`, `64Ki`, `1Ti`, or with a
/// decimal suffix `500M`, `1G` (the forms the chart's schema allows for sizes).
pub fn bytes(text: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let t = text.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| t.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((t, 1));
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "{text:?} is not a size: use bytes, or a whole number with Ki, Mi, Gi, Ti, k, M, G or T (e.g. 512Mi)"
            )
        })
}

/// The work dir must hold `--upload-concurrency` files of `--max-file-bytes` at once; a
/// smaller `--work-dir-size-limit` is refused with both values.
fn check_work_dir_budget(args: &Args) -> Result<(), String> {
    let Some(limit) = args.work_dir_size_limit else {
        return Ok(());
    };
    let needed = args
        .max_file_bytes
        .saturating_mul(u64::from(args.upload_concurrency));
    if limit >= needed {
        return Ok(());
    }
    Err(format!(
        "--work-dir-size-limit ({limit} bytes) is smaller than --max-file-bytes ({} bytes) × --upload-concurrency ({}) = {needed} bytes: a staged download could fill the work dir and fail. Raise the work dir's size (Helm: workDir.sizeLimit), or lower --max-file-bytes (operator.maxFileBytes) or --upload-concurrency (operator.uploadConcurrency)",
        args.max_file_bytes, args.upload_concurrency
    ))
}

/// The outbound policy from `--allow-private-sources` and `--platform-host`.
fn outbound_policy(args: &Args) -> Result<OutboundPolicy, String> {
    let policy = OutboundPolicy::new(args.allow_private_sources, &args.platform_hosts)?;
    if args.allow_private_sources {
        tracing::warn!(
            "--allow-private-sources: connector URLs and package URL sources may point at loopback and private addresses"
        );
    }
    if !args.platform_hosts.is_empty() {
        tracing::info!(hosts = %policy.trusted_hosts().collect::<Vec<_>>().join(","), "platform-host allow-list");
    }
    Ok(policy)
}

fn instance(explicit: Option<String>) -> String {
    explicit
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::env::var("POD_NAME")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(otau_operator::platform::config::default_instance)
}

/// Colour (ANSI escapes) in text logs only when stderr is a terminal and `NO_COLOR` is unset
/// or empty (https://no-color.org): a log file or a pipe gets plain text.
fn colour_on_stderr() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

fn init_logging(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter_text = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter_text)
        .map_err(|e| format!("--log-level {filter_text:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// Runs the operator until a signal stops it.
pub fn run(args: Args) -> ExitCode {
    if let Err(message) = init_logging(args.log_format, args.log_level.as_deref()) {
        eprintln!("run: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("run: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("run: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn client(args: &Args) -> Result<kube::Client, String> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            let options = kube::config::KubeConfigOptions {
                context: args.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None if args.context.is_some() => {
            let options = kube::config::KubeConfigOptions {
                context: args.context.clone(),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| format!("kubeconfig: {e}"))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration found (in-cluster, $KUBECONFIG or ~/.kube/config): {e}; pass --kubeconfig")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot build the Kubernetes client: {e}"))
}

/// The leader election settings, checked; `None` without `--leader-elect`.
fn lease_config(args: &Args, instance: &str) -> Result<Option<LeaseConfig>, String> {
    if !args.leader_elect {
        return Ok(None);
    }
    let namespace = args
        .lease_namespace
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| "default".to_string());
    LeaseConfig::new(
        &args.lease_name,
        &namespace,
        instance,
        args.lease_duration,
        args.lease_renew_deadline,
    )
    .map(Some)
}

/// The listeners' limits from the `--listener-*` flags, checked.
fn listener_limits(args: &Args) -> Result<Limits, String> {
    let limits = Limits {
        header_timeout: args.listener_header_timeout,
        body_timeout: args.listener_body_timeout,
        max_connections: args.listener_max_connections as usize,
        max_bodies_in_flight: args.listener_max_bodies_in_flight as usize,
        ..Limits::default()
    };
    limits
        .check()
        .map_err(|e| format!("--listener-header-timeout, --listener-body-timeout: {e}"))?;
    Ok(limits)
}

async fn serve(args: Args) -> Result<(), String> {
    let leader = lease_config(&args, &instance(args.instance.clone()))?;
    check_work_dir_budget(&args)?;
    let outbound = outbound_policy(&args)?;
    let listeners = listener_limits(&args)?;
    let client = client(&args).await?;
    let settings = Settings {
        instance: instance(args.instance.clone()),
        outbound,
        platform_page_max_bytes: args.platform_page_max_bytes,
        staging: std::sync::Arc::new(tokio::sync::Semaphore::new(usize::from(
            args.upload_concurrency,
        ))),
        max_file_bytes: args.max_file_bytes,
        fetch_timeout: args.fetch_timeout,
        work_dir: args.work_dir.clone().unwrap_or_else(std::env::temp_dir),
        token_expiry_warning: args.token_expiry_warning,
        max_device_tags: args.exosense_max_device_tags,
        listing_interval: args.exosense_listing_interval,
        platform_request_timeout: args.platform_request_timeout,
        platform_retry: RetryPolicy {
            max_tries: args.platform_max_tries.max(1),
            initial_backoff: args.platform_initial_backoff,
            max_backoff: args.platform_max_backoff,
        },
        package_resync: args.package_resync,
        error_backoff_max: args.error_backoff_max,
        write_gate: Default::default(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        instance = %settings.instance,
        namespaces = %if args.watch_namespaces.is_empty() { "<all>".to_string() } else { args.watch_namespaces.join(",") },
        "starting otau-operator"
    );
    let options = RunOptions {
        namespaces: args.watch_namespaces.clone(),
        metrics_addr: args.metrics_addr,
        crd_timeout: args.crd_wait_timeout,
        rollouts: RolloutOptions {
            intervals: PollIntervals {
                active: args.poll_interval_active.max(Duration::from_millis(100)),
                idle: args.poll_interval_idle.max(args.poll_interval_active),
                page_size: args.poll_page_size.clamp(1, 1000),
            },
            write_concurrency: args.write_concurrency.max(1),
            write_budget: args.write_budget.max(Duration::from_millis(100)),
            status_min_interval: args.status_min_interval,
            push_addr: args.push_addr.0,
            content_check_interval: args.content_check_interval.max(Duration::from_secs(1)),
        },
        leader,
        push_advertise_url: args.push_advertise_url.clone(),
        pod_ip: std::env::var("POD_IP")
            .ok()
            .filter(|ip| !ip.trim().is_empty()),
        listeners,
    };
    runtime::run(client, settings, options, signals()).await
}

/// Completes on the first SIGTERM or SIGINT received from the call on (the handlers are
/// installed at once, before the operator serves anything); a second one exits the process
/// at once.
fn signals() -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = super::signal::StopSignals::listen();
    async move {
        stop.wait().await;
        tokio::spawn(async move {
            stop.wait().await;
            eprintln!("run: second signal, exiting now");
            std::process::exit(130);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(bytes("1048576"), Ok(1_048_576));
        assert_eq!(bytes("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(bytes("2Gi"), Ok(2 << 30));
        assert!(bytes("0").is_err());
        assert!(bytes("12MB").unwrap_err().contains("Ki, Mi, Gi"));
        assert_eq!(bytes("1Ti"), Ok(1 << 40));
        assert_eq!(bytes("500M"), Ok(500_000_000));
        assert!(bytes("1.5Gi").is_err());
    }

    #[test]
    fn the_work_dir_must_hold_every_upload_slot() {
        use clap::Parser;
        // The chart's defaults fit: 512Mi × 2 = 1Gi.
        assert_eq!(
            check_work_dir_budget(&parse(&["--work-dir-size-limit", "1Gi"])),
            Ok(())
        );
        assert_eq!(check_work_dir_budget(&parse(&[])), Ok(()), "no limit told");
        let refused = check_work_dir_budget(&parse(&[
            "--work-dir-size-limit",
            "1Gi",
            "--upload-concurrency",
            "3",
        ]))
        .unwrap_err();
        assert!(
            refused.contains("--work-dir-size-limit (1073741824 bytes)")
                && refused.contains("--max-file-bytes (536870912 bytes)")
                && refused.contains("--upload-concurrency (3)"),
            "{refused}"
        );
        assert!(
            Cli::try_parse_from(["run", "--upload-concurrency", "0"]).is_err(),
            "at least one slot"
        );
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Args {
        use clap::Parser;
        let mut argv = vec!["run"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    #[test]
    fn listener_flags_default_to_the_documented_limits_and_refuse_zero() {
        assert_eq!(listener_limits(&parse(&[])), Ok(Limits::default()));
        let set = listener_limits(&parse(&[
            "--listener-header-timeout",
            "3s",
            "--listener-body-timeout",
            "4s",
            "--listener-max-connections",
            "10",
            "--listener-max-bodies-in-flight",
            "2",
        ]))
        .expect("valid");
        assert_eq!(
            (
                set.header_timeout,
                set.body_timeout,
                set.max_connections,
                set.max_bodies_in_flight
            ),
            (Duration::from_secs(3), Duration::from_secs(4), 10, 2)
        );
        let zero = listener_limits(&parse(&["--listener-body-timeout", "0s"])).unwrap_err();
        assert!(zero.contains("body timeout"), "{zero}");
        use clap::Parser;
        assert!(
            Cli::try_parse_from(["run", "--listener-max-connections", "0"]).is_err(),
            "a cap of zero is refused"
        );
    }

    #[test]
    fn leader_election_flags_are_checked() {
        assert_eq!(
            lease_config(&parse(&[]), "pod-a"),
            Ok(None),
            "off by default"
        );
        let on = lease_config(
            &parse(&["--leader-elect", "--lease-namespace", "ops"]),
            "pod-a",
        )
        .expect("valid")
        .expect("on");
        assert_eq!(
            (
                on.name.as_str(),
                on.namespace.as_str(),
                on.identity.as_str()
            ),
            ("otau-operator", "ops", "pod-a")
        );
        assert_eq!(on.lease_duration, Duration::from_secs(15));
        assert_eq!(on.renew_deadline, Duration::from_secs(10));
        let refused = lease_config(
            &parse(&[
                "--leader-elect",
                "--lease-duration",
                "10s",
                "--lease-renew-deadline",
                "10s",
            ]),
            "pod-a",
        )
        .unwrap_err();
        assert!(
            refused.contains("--lease-renew-deadline") && refused.contains("must be shorter"),
            "{refused}"
        );
    }
}
