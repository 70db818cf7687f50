//! `otau-operator emulator`: serves a local Exosite platform on one listener and prints one
//! JSON line with its URLs and management token on stdout, then hints on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use otau_operator::emulator::admin::{EdgeArgs, Edges};
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::fleet::{Fleet, FleetHandle, FleetOptions, Profile};
use otau_operator::emulator::model::{
    Account, DEFAULT_RESOURCE_MAX_BYTES, Model, ModelConfig, random_token,
};
use otau_operator::emulator::mqtt::{MqttListener, MqttMetrics, MqttOptions, MqttService};
use otau_operator::emulator::server::{
    self, ADMIN_PREFIX, AppState, GRAPHQL_PATH, LastModifiedFormat, ListenerOptions,
    MANAGEMENT_PREFIX, ServerOptions,
};
use otau_operator::emulator::tls::{SelfSigned, TlsListener, self_signed};
use otau_operator::net::server::{Limits, ListenerMetrics};

/// The connector id used when `--connector` is not given.
pub const DEFAULT_CONNECTOR: &str = "t41hp23nod8s00000";

/// Arguments of `emulator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// The IoT Connector (product) id to create.
    #[arg(long, default_value = DEFAULT_CONNECTOR)]
    connector: String,

    /// Connector served to device requests whose Host is an IP address or `localhost`
    /// (default: the `--connector`). Other hosts must be `<cid>.m2.<domain>`.
    #[arg(long)]
    default_connector: Option<String>,

    /// Serve no default connector: device requests must name the connector in Host.
    #[arg(long, conflicts_with = "default_connector")]
    no_default_connector: bool,

    /// The emulator's own management API token (printed in the JSON line; a fresh random one
    /// when unset).
    #[arg(long, env = "OTAU_EMULATOR_MANAGEMENT_TOKEN", hide_env_values = true)]
    management_token: Option<String>,

    /// E-mail accepted by `POST /api:1/token/`; its password comes from the environment
    /// variable OTAU_EMULATOR_PASSWORD (default `emulator`).
    #[arg(long, default_value = "admin@emulator.local")]
    login_email: String,

    /// Number of simulated devices (in-process). With `--profile`, sizes its `fraction` groups.
    #[arg(long)]
    devices: Option<u64>,

    /// Fleet behaviour profile (YAML; see examples/fleet-profile.yaml).
    #[arg(long)]
    profile: Option<PathBuf>,

    /// Seed of the simulated fleet (overrides the profile's).
    #[arg(long)]
    seed: Option<u64>,

    /// Format of the long poll's Last-Modified header.
    #[arg(long, value_enum, default_value = "http-date")]
    last_modified_format: LastModifiedFormat,

    /// Largest resource value in bytes (65536 for the strict legacy limit).
    #[arg(long, default_value_t = DEFAULT_RESOURCE_MAX_BYTES)]
    resource_max_bytes: usize,

    /// Reproduce the platform bug MUR-10697: setting the state of an unknown identity
    /// answers 204 instead of 404.
    #[arg(long)]
    set_state_unknown_204: bool,

    /// Also serve everything over HTTPS on this address (self-signed certificate generated at
    /// start, printed on stderr), for device clients that insist on TLS.
    #[arg(long)]
    https_listen: Option<SocketAddr>,

    /// Serve the device MQTT API (MQTT 3.1.1, plain) on this address; connections use the
    /// default connector. Port 0 picks a free port (printed in the ready line as `mqtt_url`).
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<SocketAddr>,

    /// Serve the device MQTT API over TLS on this address (the certificate of --https-listen,
    /// in the ready line as `tls_certificate_pem`); the connector comes from SNI
    /// `<cid>.m2.<domain>`, else the default connector. A client offering ALPN `http/1.1` gets
    /// the HTTP API on the same port.
    #[arg(long, value_name = "ADDR")]
    mqtts_listen: Option<SocketAddr>,

    /// Time an MQTT client has from the connection (TLS handshake included) to a complete
    /// CONNECT.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    mqtt_connect_timeout: Duration,

    /// Largest MQTT packet a device may send (default: the resource value size plus 64 KiB);
    /// a larger one closes the connection.
    #[arg(long, value_name = "BYTES")]
    mqtt_max_packet_bytes: Option<usize>,

    /// Time a client has to send a request's complete headers (from the connection, the TLS
    /// handshake included, or the end of the previous response); idle and half-sent
    /// connections are closed after it. A long poll's wait is not limited by it.
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    listener_header_timeout: Duration,

    /// Time a request body has to arrive completely after its headers.
    #[arg(long, default_value = "120s", value_parser = duration, value_name = "DURATION")]
    listener_body_timeout: Duration,

    /// Connections each listener holds open at once (one long poll per device); one more is
    /// accepted and closed at once. The process needs as many file descriptors (ulimit -n).
    #[arg(long, default_value_t = server::MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    listener_max_connections: u32,

    /// Requests each listener receives a body from at once; one more is answered 503 before
    /// its body is read.
    #[arg(long, default_value_t = server::MAX_BODIES_IN_FLIGHT as u32, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    listener_max_bodies_in_flight: u32,

    /// Fault injection, rate limit and webhook push of device2 events.
    #[command(flatten)]
    edges: EdgeArgs,
}

fn duration(text: &str) -> Result<Duration, String> {
    otau_operator::api::parse_duration(text).map_err(|e| e.to_string())
}

/// The listeners' limits and metrics: the `--listener-*` flags over the defaults of `model`,
/// counted in the registry behind `/metrics`.
fn listener_options(args: &Args, model: &Model, edges: &Edges) -> Result<ListenerOptions, String> {
    let limits = Limits {
        header_timeout: args.listener_header_timeout,
        body_timeout: args.listener_body_timeout,
        max_connections: args.listener_max_connections as usize,
        max_bodies_in_flight: args.listener_max_bodies_in_flight as usize,
        ..server::default_limits(model)
    };
    limits
        .check()
        .map_err(|e| format!("--listener-header-timeout, --listener-body-timeout: {e}"))?;
    let metrics = ListenerMetrics::new("").map_err(|e| format!("metrics: {e}"))?;
    metrics
        .register(edges.admin.requests.registry())
        .map_err(|e| format!("metrics: {e}"))?;
    Ok(ListenerOptions { limits, metrics })
}

/// The one JSON line printed on stdout when the emulator is ready.
#[derive(Debug, serde::Serialize)]
struct Ready<'a> {
    device_url: String,
    device_host: String,
    management_url: String,
    graphql_url: String,
    admin_url: String,
    object_store_url: String,
    metrics_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    https_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtts_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_certificate_pem: Option<String>,
    connector: &'a str,
    management_token: &'a str,
    devices: u64,
}

/// Serves the emulator until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("emulator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("emulator: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let token = args.management_token.clone().unwrap_or_else(random_token);
    let password =
        std::env::var("OTAU_EMULATOR_PASSWORD").unwrap_or_else(|_| "emulator".to_string());
    let config = ModelConfig {
        resource_max_bytes: args.resource_max_bytes,
        management_tokens: vec![token.clone()],
        accounts: vec![Account {
            email: args.login_email.clone(),
            password,
        }],
        ..ModelConfig::default()
    };
    let model = Model::new(config, Arc::new(SystemClock));
    model
        .add_connector(&args.connector)
        .map_err(|e| format!("--connector: {e}"))?;
    let default_connector = if args.no_default_connector {
        None
    } else {
        let cid = args
            .default_connector
            .clone()
            .unwrap_or_else(|| args.connector.clone());
        model
            .add_connector(&cid)
            .map_err(|e| format!("--default-connector: {e}"))?;
        Some(cid)
    };
    let state = AppState {
        model: model.clone(),
        options: Arc::new(ServerOptions {
            default_connector,
            last_modified_format: args.last_modified_format,
            set_state_unknown_204: args.set_state_unknown_204,
        }),
    };
    let edges = Edges::start(
        &model,
        state.options.default_connector.as_deref(),
        &args.edges,
    )
    .map_err(|e| e.to_string())?;
    let app = edges.attach(server::router(state.clone()));
    let listener = listener_options(&args, &model, &edges)?;
    let running = server::start_with(args.listen, state.clone(), app.clone(), listener.clone())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let certificate = match (args.https_listen, args.mqtts_listen) {
        (None, None) => None,
        _ => Some(self_signed(&[]).map_err(|e| e.to_string())?),
    };
    let https = match (args.https_listen, &certificate) {
        (Some(addr), Some(cert)) => Some(
            TlsListener::start_with_certificate(addr, app.clone(), cert, listener.clone())
                .await
                .map_err(|e| format!("cannot serve HTTPS on {addr}: {e}"))?,
        ),
        _ => None,
    };
    let mqtt = start_mqtt(&args, &state, &edges, app, &listener, certificate.as_ref()).await?;

    let fleet = start_fleet(&args, &model)?;
    let devices = fleet
        .as_ref()
        .map(|f| f.identities().iter().map(|(_, n)| n).sum())
        .unwrap_or(0);

    let base = running.base_url.clone();
    let port = running.local_addr.port();
    let ready = Ready {
        device_url: base.clone(),
        device_host: format!("{}.m2.localhost:{port}", args.connector),
        management_url: format!("{base}{MANAGEMENT_PREFIX}/"),
        graphql_url: format!("{base}{GRAPHQL_PATH}"),
        admin_url: format!("{base}{ADMIN_PREFIX}"),
        object_store_url: model.object_store_url(),
        metrics_url: format!("{base}/metrics"),
        https_url: https.as_ref().map(|h| h.base_url.clone()),
        mqtt_url: mqtt.plain.as_ref().map(|l| l.url.clone()),
        mqtts_url: mqtt.tls.as_ref().map(|l| l.url.clone()),
        tls_certificate_pem: certificate.as_ref().map(|c| c.certificate_pem()),
        connector: &args.connector,
        management_token: &token,
        devices,
    };
    let line = serde_json::to_string(&ready).map_err(|e| e.to_string())?;
    // Listening before saying ready: a SIGTERM sent right after the line still stops cleanly.
    let mut stop = super::signal::StopSignals::listen();
    println!("{line}");
    print_hints(&args, &base, &token, fleet.as_ref());
    if let Some(h) = &https {
        eprintln!(
            "  HTTPS:               {} (self-signed certificate below)\n{}",
            h.base_url,
            h.certificate_pem()
        );
    }

    stop.wait().await;
    eprintln!("emulator: stopping");
    if let Some(f) = fleet {
        let summary = f.stop();
        eprintln!("emulator: fleet at stop: {summary}");
    }
    if let Some(h) = https {
        h.shutdown().await;
    }
    mqtt.shutdown().await;
    running.shutdown().await;
    drop(edges);
    Ok(())
}

/// The MQTT listeners that run.
struct MqttListeners {
    service: Option<Arc<MqttService>>,
    plain: Option<MqttListener>,
    tls: Option<MqttListener>,
}

impl MqttListeners {
    async fn shutdown(self) {
        for listener in [self.plain, self.tls].into_iter().flatten() {
            listener.shutdown().await;
        }
        if let Some(service) = self.service {
            service.stop();
        }
    }
}

/// Starts `--mqtt-listen` and `--mqtts-listen`, sharing the model, the sessions and the
/// metrics (registered behind `/metrics`).
async fn start_mqtt(
    args: &Args,
    state: &AppState,
    edges: &Edges,
    app: axum::Router,
    listener: &ListenerOptions,
    certificate: Option<&SelfSigned>,
) -> Result<MqttListeners, String> {
    if args.mqtt_listen.is_none() && args.mqtts_listen.is_none() {
        return Ok(MqttListeners {
            service: None,
            plain: None,
            tls: None,
        });
    }
    let mut options = MqttOptions::defaults(&state.model, state.options.default_connector.clone());
    // The same fault rules as the HTTP listeners (`--fault 'mqtt.publish:drop_rate=0.1'`,
    // `PUT /admin/faults`).
    options.faults = edges.admin.faults.clone();
    options.connect_timeout = args.mqtt_connect_timeout;
    options.max_connections = args.listener_max_connections as usize;
    // The HTTP served on the TLS port by ALPN has the HTTP listeners' limits and metrics.
    options.http = listener.clone();
    if let Some(max) = args.mqtt_max_packet_bytes {
        options.max_packet_bytes = max;
    }
    if options.connect_timeout.is_zero() {
        return Err("--mqtt-connect-timeout must be above zero".to_string());
    }
    let metrics = MqttMetrics::new();
    metrics
        .register(edges.admin.requests.registry())
        .map_err(|e| format!("metrics: {e}"))?;
    let service = MqttService::new(state.model.clone(), options, metrics);
    let plain = match args.mqtt_listen {
        Some(addr) => Some(
            MqttListener::start_plain(addr, service.clone())
                .await
                .map_err(|e| format!("cannot serve MQTT on {addr}: {e}"))?,
        ),
        None => None,
    };
    let tls = match (args.mqtts_listen, certificate) {
        (Some(addr), Some(cert)) => Some(
            MqttListener::start_tls(addr, service.clone(), cert, app)
                .await
                .map_err(|e| format!("cannot serve MQTT over TLS on {addr}: {e}"))?,
        ),
        _ => None,
    };
    Ok(MqttListeners {
        service: Some(service),
        plain,
        tls,
    })
}

fn start_fleet(args: &Args, model: &Model) -> Result<Option<FleetHandle>, String> {
    let profile = match (&args.profile, args.devices) {
        (None, None) => return Ok(None),
        (Some(path), _) => Profile::from_file(path).map_err(|e| e.to_string())?,
        (None, Some(n)) => Fleet::default_profile(n),
    };
    let options = FleetOptions {
        devices: args.devices,
        seed: args.seed,
    };
    Fleet::start(model, &args.connector, &profile, &options)
        .map(Some)
        .map_err(|e| format!("simulated fleet: {e}"))
}

fn print_hints(args: &Args, base: &str, token: &str, fleet: Option<&FleetHandle>) {
    let cid = &args.connector;
    eprintln!("emulator: serving connector {cid} on {base}");
    eprintln!(
        "  whitelist a device:  curl -X PUT -H 'Authorization: token {token}' {base}{MANAGEMENT_PREFIX}/service/{cid}/device2/identity/dev1"
    );
    eprintln!("  activate it:         curl -d id=dev1 {base}/provision/activate");
    eprintln!("  (or send Host: {cid}.m2.localhost to name the connector)");
    eprintln!(
        "  long poll:           curl -H 'X-Exosite-CIK: <token>' -H 'Request-Timeout: 30000' -H 'If-Modified-Since: 0' '{base}/onep:v1/stack/alias?config_otau'"
    );
    eprintln!(
        "  login:               POST {base}{MANAGEMENT_PREFIX}/token/ {{\"email\": \"{}\", \"password\": $OTAU_EMULATOR_PASSWORD}}",
        args.login_email
    );
    if let Some(f) = fleet {
        for (first, n) in f.identities() {
            eprintln!("  simulated devices:   {n} from {first}");
        }
    }
    eprintln!("  stop with Ctrl-C or SIGTERM");
}
