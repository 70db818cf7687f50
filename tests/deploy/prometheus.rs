//! The chart's alerts and Grafana dashboard checked with the real Prometheus tools (Debian's
//! `prometheus` package, `hack/tools.sh debian`): `promtool check rules` and `promtool test
//! rules` on the rendered PrometheusRule, `promtool check metrics` on the operator's live
//! `/metrics`, and a real Prometheus scraping the operator every second during an end-to-end
//! rollout (200 devices, a quarter failing, an automatic pause, platform errors injected by the
//! emulator), after which every dashboard query and every series an alert reads returns data.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use otau_operator::api::Rollout;
use serde_json::Value;

use crate::support::process::CREDENTIAL_OPT_IN;
use crate::support::{ControlPlane, repo_root, tool};

use crate::harness::{
    CID, DEADLINE, MTOKEN, Operator, VERSION, apply, has, profile, rollout_yaml, wait_rollout,
};
use otau_operator::emulator::admin::{self, AdminState, RequestMetrics};
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::faults::{FaultConfig, FaultRule, Faults};
use otau_operator::emulator::fleet::{Fleet, FleetHandle, FleetOptions};
use otau_operator::emulator::graphql::GraphqlState;
use otau_operator::emulator::model::{Model, ModelConfig};
use otau_operator::emulator::server::{self, AppState, RunningServer, ServerOptions};

/// Release name and namespace the rules are rendered with (the promtool test file's labels and
/// the test Prometheus' target labels use the same).
const RELEASE: &str = "otau-operator";
const RELEASE_NAMESPACE: &str = "otau-system";
/// The scrape job: the metrics Service's name, which a ServiceMonitor uses as `job`.
const JOB: &str = "otau-operator-metrics";

fn chart() -> PathBuf {
    repo_root().join("charts/otau-operator")
}

/// Runs a tool; panics with its output unless it succeeds; returns stdout.
fn run(command: &mut Command, what: &str) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of one chart file with `sets`, parsed.
fn render(file: &str, sets: &[&str]) -> serde_yaml::Value {
    let mut command = Command::new(tool("helm"));
    command.args(["template", RELEASE]).arg(chart()).args([
        "--namespace",
        RELEASE_NAMESPACE,
        "--show-only",
        file,
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let text = run(&mut command, "helm template");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("rendered {file}: {e}\n{text}"))
}

/// The rendered PrometheusRule's `spec.groups` as a plain Prometheus rules file.
fn rules_file() -> serde_yaml::Value {
    let rule = render(
        "templates/prometheusrule.yaml",
        &["prometheusRule.enabled=true"],
    );
    assert_eq!(rule["kind"], "PrometheusRule");
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), rule["spec"]["groups"].clone());
    serde_yaml::Value::Mapping(file)
}

/// (alert name, expression) of every rule.
fn alerts(rules: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name").to_owned();
            let expr = rule["expr"].as_str().expect("expr").trim().to_owned();
            out.push((name, expr));
        }
    }
    out
}

/// The Markdown anchors of the `##`/`###` headings of a document (GitHub's rule for plain
/// words: lower case, spaces to dashes, punctuation dropped).
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(|heading| {
            heading
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// The seven alerts of the chart pass `promtool check rules`, and the unit tests in
/// tests/fixtures/prometheus/alerts.test.yaml (a firing and a non-firing case for every alert,
/// checked here) pass `promtool test rules`; every runbook link names a heading of
/// docs/alerts.md.
#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rules = rules_file();
    let names: BTreeSet<String> = alerts(&rules).into_iter().map(|(n, _)| n).collect();
    let wanted: BTreeSet<String> = [
        "RolloutAutoPaused",
        "RolloutFailureRateHigh",
        "RolloutCompletedWithFailures",
        "RolloutStalled",
        "PlatformErrorsHigh",
        "ConnectorTokenExpiringSoon",
        "OperatorDown",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, wanted, "the chart's alerts");

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rules).expect("rules YAML"),
    )
    .expect("write rules.yaml");
    let fixture = repo_root().join("tests/fixtures/prometheus/alerts.test.yaml");
    let tests_text = std::fs::read_to_string(&fixture).expect("read the promtool test file");
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests_text).expect("copy tests");

    let checked = run(
        Command::new(tool("promtool"))
            .current_dir(dir.path())
            .args(["check", "rules", "rules.yaml"]),
        "promtool check rules",
    );
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = run(
        Command::new(tool("promtool"))
            .current_dir(dir.path())
            .args(["test", "rules", "alerts.test.yaml"]),
        "promtool test rules",
    );
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a case where it fires and one where it stays quiet.
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests_text).expect("test file YAML");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for group in tests["tests"].as_sequence().expect("tests") {
        for case in group["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            assert!(
                names.contains(&name),
                "the tests name an unknown alert {name}"
            );
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    assert_eq!(firing, names, "alerts without a firing case");
    assert_eq!(quiet, names, "alerts without a non-firing case");

    // Runbook links point at docs/alerts.md headings.
    let doc = std::fs::read_to_string(repo_root().join("docs/alerts.md")).expect("docs/alerts.md");
    let headings = anchors(&doc);
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{:?} has no runbook_url", rule["alert"]));
            let anchor = url
                .split_once("docs/alerts.md#")
                .map(|(_, a)| a)
                .unwrap_or_else(|| panic!("{url} is not a docs/alerts.md anchor"));
            assert!(
                headings.contains(anchor),
                "docs/alerts.md has no heading for #{anchor}; headings: {headings:?}"
            );
            assert!(
                rule["annotations"]["description"].as_str().is_some(),
                "{:?} has no description",
                rule["alert"]
            );
        }
    }
}

/// Thresholds follow the values: a different stalledAfter and tokenExpiryWarning change the
/// expressions; a malformed duration fails the render with a message naming it.
#[test]
fn alert_thresholds_follow_the_values() {
    let rule = render(
        "templates/prometheusrule.yaml",
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.stalledAfter=1h30m",
            "prometheusRule.tokenExpiryWarning=48h",
            "prometheusRule.failureRatePercent=25",
            "prometheusRule.failureRateMinFinished=50",
            "prometheusRule.platformErrorRatePercent=5",
        ],
    );
    let rules = {
        let mut m = serde_yaml::Mapping::new();
        m.insert("groups".into(), rule["spec"]["groups"].clone());
        serde_yaml::Value::Mapping(m)
    };
    let exprs: BTreeMap<String, String> = alerts(&rules).into_iter().collect();
    assert!(exprs["RolloutStalled"].contains("> 5400"), "{exprs:?}");
    assert!(
        exprs["ConnectorTokenExpiringSoon"].contains("< 172800"),
        "{exprs:?}"
    );
    let failure_rate = &exprs["RolloutFailureRateHigh"];
    assert!(
        failure_rate.contains(")) > 0.25\n") && failure_rate.contains(">= 50\n"),
        "{failure_rate}"
    );
    assert!(
        exprs["PlatformErrorsHigh"].contains("> 0.05\n"),
        "{exprs:?}"
    );
    let description = serde_yaml::to_string(&rule["spec"]["groups"]).expect("groups");
    assert!(
        description.contains("(alert above 25 %, at least 50 finished)"),
        "{description}"
    );
    // The schema refuses a percentage above 100 (the alert could never fire) with a message
    // naming the key; the template refuses a malformed duration naming the value.
    for (set, named) in [
        (
            "prometheusRule.failureRatePercent=150",
            "failureRatePercent",
        ),
        ("prometheusRule.stalledAfter=soon", "soon"),
    ] {
        let out = Command::new(tool("helm"))
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--set", "prometheusRule.enabled=true", "--set", set])
            .output()
            .expect("helm");
        assert!(!out.status.success(), "{set} rendered");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{set}: {stderr}");
    }
}

/// The dashboard ConfigMap carries files/dashboard.json as it is and the configured labels.
#[test]
fn dashboard_configmap_carries_the_json_and_labels() {
    let map = render(
        "templates/grafana-dashboard.yaml",
        &[
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.labels.team=fleet",
        ],
    );
    assert_eq!(map["kind"], "ConfigMap");
    assert_eq!(map["metadata"]["labels"]["team"], "fleet");
    let embedded: Value = serde_json::from_str(
        map["data"]["otau-operator.json"]
            .as_str()
            .expect("dashboard key"),
    )
    .expect("embedded dashboard JSON");
    assert_eq!(embedded, dashboard());
}

/// The fleet-progress panel counts a device finished exactly when the Rollout's waves do
/// (docs/rollouts.md, "A device's states"; `DeviceState::is_finished`): every state but the
/// unfinished ones (pending, notified, in progress, busy, and foreign devices still to be
/// written under `Notify`). `promtool test rules` evaluates the panel's own query on series of
/// two Rollouts, one with `foreignManifests: Skip` and one with `Notify`; the expected ratios
/// come from the counts fed in, by that rule.
#[test]
fn the_fleet_progress_panel_counts_finished_devices_as_the_waves_do() {
    let (_, expr) = dashboard_queries("fleet", ".*")
        .into_iter()
        .find(|(what, _)| what.starts_with("panel \"Fleet progress"))
        .expect("the fleet progress panel");
    // Per Rollout: (wave, state, devices) as otau_rollout_devices reports them.
    let skip: &[(u32, &str, i64)] = &[
        (1, "targeted", 10),
        (1, "succeeded", 6),
        (1, "reruns", 2),
        (1, "failed", 1),
        (1, "foreign", 3),
        (1, "foreign_skipped", 3),
        (2, "targeted", 10),
        (2, "succeeded", 5),
        (2, "skipped", 1),
        (2, "foreign", 2),
        (2, "foreign_skipped", 2),
        (2, "in_progress", 2),
    ];
    let notify: &[(u32, &str, i64)] = &[
        (1, "targeted", 10),
        (1, "succeeded", 5),
        (1, "timed_out", 1),
        (1, "foreign", 3),
        (1, "foreign_skipped", 0),
        (1, "pending", 1),
    ];
    let unfinished = ["pending", "notified", "in_progress", "busy"];
    let expected = |series: &[(u32, &str, i64)]| {
        let sum = |keep: &dyn Fn(&str) -> bool| -> i64 {
            series.iter().filter(|s| keep(s.1)).map(|s| s.2).sum()
        };
        let targeted = sum(&|s| s == "targeted");
        let waiting_foreign = sum(&|s| s == "foreign") - sum(&|s| s == "foreign_skipped");
        let finished = targeted - sum(&|s| unfinished.contains(&s)) - waiting_foreign;
        finished as f64 / targeted as f64
    };
    let mut input = String::new();
    for (rollout, series) in [("skip", skip), ("notify", notify)] {
        for (wave, state, value) in series {
            input.push_str(&format!(
                "      - series: 'otau_rollout_devices{{namespace=\"fleet\", rollout=\"{rollout}\", wave=\"{wave}\", state=\"{state}\"}}'\n        values: '{value}x3'\n"
            ));
        }
    }
    let (want_skip, want_notify) = (expected(skip), expected(notify));
    assert_eq!((want_skip, want_notify), (0.9, 0.6), "the rule, by hand");
    let tests = format!(
        "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n      - expr: {expr}\n        eval_time: 2m\n        exp_samples:\n          - labels: '{{namespace=\"fleet\", rollout=\"skip\"}}'\n            value: {want_skip}\n          - labels: '{{namespace=\"fleet\", rollout=\"notify\"}}'\n            value: {want_notify}\n",
        expr = serde_json::to_string(&expr).expect("quoted"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("panel.test.yaml"), &tests).expect("write the test");
    let tested = run(
        Command::new(tool("promtool"))
            .current_dir(dir.path())
            .args(["test", "rules", "panel.test.yaml"]),
        &format!("promtool test rules\n{tests}"),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(chart().join("files/dashboard.json")).expect("dashboard");
    serde_json::from_str(&text).expect("dashboard JSON")
}

/// Every panel query of the dashboard as (panel title, PromQL), with the template variables
/// replaced: `$namespace` and `$rollout` by the test's, `$job` by `.*` and
/// `$__rate_interval` by `5m` (longer than the test, so every rate covers the whole run).
/// Variables (`label_values(selector, label)`) add their selector.
fn dashboard_queries(namespace: &str, rollout: &str) -> Vec<(String, String)> {
    let substitute = |q: &str| {
        q.replace("$namespace", namespace)
            .replace("$rollout", rollout)
            .replace("$job", ".*")
            .replace("$__rate_interval", "5m")
    };
    let d = dashboard();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            let expr = target["expr"].as_str().expect("expr");
            out.push((format!("panel {title:?}"), substitute(expr)));
        }
    }
    for variable in d["templating"]["list"].as_array().expect("variables") {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().expect("variable query");
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| {
                panic!("variable query {query} is not label_values(selector, label)")
            });
        out.push((
            format!("variable {}", variable["name"]),
            substitute(selector),
        ));
    }
    out
}

/// The vector selectors of a PromQL expression: every `otau_…` metric name and `up`, with its
/// `{…}` matchers. Enough for the operator's rules, which read nothing else.
fn selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !word(bytes[i - 1]))
            && (expr[i..].starts_with("otau_") || expr[i..].starts_with("up{"));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        if end < bytes.len() && bytes[end] == b'{' {
            end += expr[end..].find('}').expect("closing brace") + 1;
        }
        let selector = expr[i..end].to_owned();
        if !out.contains(&selector) {
            out.push(selector);
        }
        i = end;
    }
    out
}

/// The emulator with its fault layer (the e2e harness' emulator has none): the connector
/// [`CID`] with a simulated fleet, and `error_rate` of the device2 management calls answered
/// `503`, so the platform error series exist.
struct FaultyEmu {
    base: String,
    fleet: Option<FleetHandle>,
    _server: RunningServer,
}

impl FaultyEmu {
    async fn start(
        profile: &otau_operator::emulator::fleet::Profile,
        error_rate: f64,
    ) -> FaultyEmu {
        let model = Model::new(
            ModelConfig {
                management_tokens: vec![MTOKEN.to_string()],
                ..ModelConfig::default()
            },
            Arc::new(SystemClock),
        );
        model.add_connector(CID).expect("connector");
        let state = AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(CID.to_string()),
                ..ServerOptions::default()
            }),
        };
        let mut rule = FaultRule::new("device2.*");
        rule.error_rate = error_rate;
        let faults = FaultConfig {
            seed: 9,
            rules: vec![rule],
            rate_limit: None,
        };
        let admin_state = AdminState {
            model: model.clone(),
            faults: Arc::new(Faults::new(faults).expect("fault setting")),
            requests: RequestMetrics::new(),
            webhook: None,
        };
        let graphql = GraphqlState {
            model: model.clone(),
            default_connector: Some(CID.to_string()),
            automation_tokens: Vec::new(),
        };
        let app = admin::attach(server::router(state.clone()), admin_state, graphql);
        let running = server::start_with_router("127.0.0.1:0".parse().expect("addr"), state, app)
            .await
            .expect("start the emulator");
        let fleet = Fleet::start(&model, CID, profile, &FleetOptions::default()).expect("fleet");
        FaultyEmu {
            base: running.base_url.clone(),
            fleet: Some(fleet),
            _server: running,
        }
    }

    /// The token Secret, the IoTConnector (rate limit raised) and the links-only
    /// SoftwarePackage `fw` on this emulator.
    fn base_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n{CREDENTIAL_OPT_IN}type: Opaque\nstringData:\n  token: {MTOKEN}\n---\napiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata:\n  name: emulator\nspec:\n  productId: {CID}\n  managementUrl: {base}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef:\n    name: token\n  rateLimit:\n    requestsPerSecond: 5000\n    burst: 5000\n---\napiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw\nspec:\n  connectorRef:\n    name: emulator\n  version: {VERSION}\n  links:\n    - https://vendor.example.com/fw/{VERSION}/fw.img\n",
            base = self.base
        )
    }
}

impl Drop for FaultyEmu {
    fn drop(&mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.stop();
        }
    }
}

/// A Prometheus server (the Debian binary) for one test, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port scraping `target` every second as job
    /// [`JOB`] with the target label `namespace` = [`RELEASE_NAMESPACE`] (what a
    /// ServiceMonitor adds), `honor_labels` so the Rollout series keep their own `namespace`,
    /// and the chart's rules loaded; waits until it is ready.
    async fn start(target: SocketAddr, rules: &serde_yaml::Value) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("rules.yaml"),
            serde_yaml::to_string(rules).expect("rules"),
        )
        .expect("write rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yaml\nscrape_configs:\n  - job_name: {JOB}\n    honor_labels: true\n    static_configs:\n      - targets: [\"{target}\"]\n        labels:\n          namespace: {RELEASE_NAMESPACE}\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(tool("prometheus"))
            .current_dir(dir.path())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.base);
        let started = Instant::now();
        loop {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "Prometheus was not ready after {DEADLINE:?}:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`; panics unless the status is success.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus /api/v1/{path}: {e}"));
        let body: Value = response.json().await.expect("Prometheus JSON");
        assert_eq!(
            body["status"], "success",
            "/api/v1/{path} {query:?}: {body}"
        );
        body["data"].clone()
    }

    /// The instant vector of `query` now (panics on a query Prometheus rejects).
    async fn query(&self, query: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", query)]).await;
        assert_eq!(data["resultType"], "vector", "{query}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a sample's value is a finite number (`[time, "value"]`).
fn finite(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// `promtool check metrics` on one `/metrics` text: no problems reported.
fn check_metrics(text: &str) {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems:\n{report}"
    );
}

/// A real Prometheus scrapes the operator every second through a rollout of 200 devices (a
/// quarter fail to install, so the failure threshold pauses it) while the emulator fails 5 %
/// of the device2 calls. Then:
///
/// - `promtool check metrics` accepts the live `/metrics` taken mid-rollout;
/// - every dashboard query returns at least one finite sample;
/// - every series an alert expression reads (each vector selector in it, thresholds and
///   aggregations removed) returns data. Thresholds themselves are what the promtool unit
///   tests check; here the whole expression is also evaluated where this run decides the
///   answer: RolloutAutoPaused and RolloutFailureRateHigh must return the paused rollout,
///   RolloutStalled (a paused rollout is not stalled) and OperatorDown must return nothing;
/// - Prometheus loaded all seven rules without errors and holds RolloutAutoPaused for the
///   rollout as pending or firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_rollout_and_answers_every_dashboard_and_alert_query() {
    let rules = rules_file();
    let cp = ControlPlane::get();
    let ns = cp.namespace("deploy-prometheus").await;
    let emu = FaultyEmu::start(
        &profile(41, &[("ok-", 150, ""), ("bad-", 50, "install_error: 1")]),
        0.05,
    )
    .await;
    let op = Operator::start(cp, &ns, &[]).await;
    let prometheus = Prometheus::start(op.metrics_addr, &rules).await;

    apply(cp, &ns, &emu.base_yaml());
    let waves = "  waves:\n    - percent: 50\n    - percent: 100\n  policy:\n    failureThreshold:\n      percent: 10\n      minFinished: 10\n";
    apply(cp, &ns, &rollout_yaml("fw-prom", waves));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    wait_rollout(&api, "fw-prom", "devices notified", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.totals.notified + s.totals.in_progress + s.totals.succeeded > 0)
    })
    .await;
    check_metrics(&op.metrics().await);

    wait_rollout(&api, "fw-prom", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;

    // Queries that must return data, and whole alert expressions that must not.
    let mut must_have: Vec<(String, String)> = dashboard_queries(&ns, "fw-prom");
    let mut must_be_empty: Vec<(String, String)> = Vec::new();
    for (alert, expr) in alerts(&rules) {
        for selector in selectors(&expr) {
            must_have.push((format!("alert {alert} reads"), selector));
        }
        match alert.as_str() {
            "RolloutAutoPaused" | "RolloutFailureRateHigh" => {
                must_have.push((format!("alert {alert}"), expr));
            }
            "RolloutStalled" | "OperatorDown" => {
                must_be_empty.push((format!("alert {alert}"), expr))
            }
            _ => {}
        }
    }
    assert!(must_have.len() > 25, "too few queries: {must_have:?}");

    // Wait until Prometheus has scraped everything (series appear within a few scrapes).
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for (what, query) in &must_have {
            if !prometheus.query(query).await.iter().any(finite) {
                missing.push(format!("{what}: {query}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "after {DEADLINE:?} these queries still return no data:\n{}\n/metrics now:\n{}",
            missing.join("\n"),
            op.metrics().await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (what, query) in &must_be_empty {
        let result = prometheus.query(query).await;
        assert!(result.is_empty(), "{what} returned {result:?} for {query}");
    }
    let paused = prometheus
        .query(r#"otau_rollout_paused{reason="FailureThresholdExceeded"} == 1"#)
        .await;
    assert!(
        paused
            .iter()
            .any(|s| s["metric"]["rollout"] == "fw-prom" && s["metric"]["namespace"] == ns.as_str()),
        "the paused series keeps the Rollout's namespace (honor_labels): {paused:?}"
    );

    // Prometheus evaluates the chart's rules: all loaded and healthy, the auto-pause alert held.
    let groups = prometheus.api("rules", &[("type", "alert")]).await;
    let mut loaded = 0;
    for group in groups["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            loaded += 1;
            assert_eq!(rule["health"], "ok", "rule {}: {rule}", rule["name"]);
        }
    }
    assert_eq!(loaded, 7, "{groups}");
    let started = Instant::now();
    loop {
        let alerts = prometheus.api("alerts", &[]).await;
        let held = alerts["alerts"].as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == "RolloutAutoPaused" && a["labels"]["rollout"] == "fw-prom"
        });
        if held {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "RolloutAutoPaused never became pending: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The selector scan finds each metric once, with its matchers, and nothing else.
#[test]
fn selectors_are_read_from_alert_expressions() {
    let expr = "absent(up{job=\"x\", namespace=\"y\"} == 1)\nor\nmax(otau_leader{job=\"x\"}) == 0 and on (a) rate(otau_platform_requests_total[5m]) > 0.1 unless otau_leader{job=\"x\"}";
    assert_eq!(
        selectors(expr),
        [
            "up{job=\"x\", namespace=\"y\"}",
            "otau_leader{job=\"x\"}",
            "otau_platform_requests_total",
        ]
    );
    // Names inside label values or longer words are no selectors.
    assert!(selectors("sum by (setup) (x{a=\"otau-up\"})").is_empty());
}
