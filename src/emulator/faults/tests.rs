use super::args::{parse_rate_limit, parse_rule};
use super::*;
use axum::http::Request;

fn route(method: Method, path: &str) -> RouteInfo {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    RouteInfo::of(&req)
}

fn state_patch() -> RouteInfo {
    route(
        Method::PATCH,
        "/api:1/service/abc/device2/identity/d1/state",
    )
}

#[test]
fn off_by_default() {
    let f = Faults::off();
    assert!(f.config().is_off());
    for _ in 0..100 {
        assert_eq!(f.decide(&state_patch()).action, Action::Pass);
    }
    assert_eq!(f.counts(), FaultCounts::default());
}

#[test]
fn patterns_match_names_prefixes_paths_and_methods() {
    let p = |s: &str| RoutePattern::parse(s).unwrap();
    let r = state_patch();
    assert!(p("*").matches(&r));
    assert!(p("device2.state").matches(&r));
    assert!(p("PATCH device2.state").matches(&r));
    assert!(!p("GET device2.state").matches(&r));
    assert!(p("device2.*").matches(&r));
    assert!(!p("content.*").matches(&r));
    assert!(p("/api:1/service/abc/").matches(&r));
    assert!(!p("/api:1/service/xyz/").matches(&r));
    // `*` means the management API; other APIs only by name or path.
    assert!(!p("*").matches(&route(Method::GET, "/timestamp")));
    assert!(p("device.*").matches(&route(Method::GET, "/timestamp")));
    assert!(p("/timestamp").matches(&route(Method::GET, "/timestamp")));
    // Admin routes are never faulted.
    assert!(!p("*").matches(&route(Method::PUT, "/admin/faults")));
    assert!(!p("/").matches(&route(Method::GET, "/metrics")));
}

#[test]
fn bad_patterns_and_numbers_are_explained() {
    let e = RoutePattern::parse("device2.stat").unwrap_err().to_string();
    assert!(
        e.contains("unknown route name") && e.contains("device2.state"),
        "{e}"
    );
    let e = RoutePattern::parse("patch device2.state")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP method"), "{e}");
    let e = RoutePattern::parse("nope.*").unwrap_err().to_string();
    assert!(e.contains("no route name starts with"), "{e}");
    let mut rule = FaultRule::new("*");
    rule.error_rate = 1.5;
    let cfg = FaultConfig {
        rules: vec![rule.clone()],
        ..Default::default()
    };
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("between 0 and 1")
    );
    rule.error_rate = 0.6;
    rule.drop_rate = 0.6;
    let cfg = FaultConfig {
        rules: vec![rule.clone()],
        ..Default::default()
    };
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("more than 1")
    );
    rule.drop_rate = 0.0;
    rule.error_status = 404;
    let cfg = FaultConfig {
        rules: vec![rule],
        ..Default::default()
    };
    assert!(cfg.validate().unwrap_err().to_string().contains("5xx"));
    let cfg = FaultConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.0,
            burst: 1,
        }),
        ..Default::default()
    };
    assert!(cfg.validate().unwrap_err().to_string().contains("above 0"));
}

#[test]
fn rates_are_roughly_honoured_and_repeat_with_the_seed() {
    let mut rule = FaultRule::new("device2.state");
    rule.error_rate = 0.25;
    rule.throttle_rate = 0.25;
    rule.drop_rate = 0.25;
    rule.latency_ms = 7;
    let cfg = FaultConfig {
        seed: 42,
        rules: vec![rule],
        rate_limit: None,
    };
    let run = || {
        let f = Faults::new(cfg.clone()).unwrap();
        (0..2000)
            .map(|_| f.decide(&state_patch()))
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run(), "same seed, same decisions");
    assert!(a.iter().all(|d| d.latency == Duration::from_millis(7)));
    let count = |want: fn(&Action) -> bool| a.iter().filter(|d| want(&d.action)).count();
    for n in [
        count(|a| *a == Action::Pass),
        count(|a| *a == Action::Drop),
        count(|a| *a == Action::Error(503)),
        count(|a| {
            matches!(
                a,
                Action::Throttle {
                    retry_after_secs: 1
                }
            )
        }),
    ] {
        assert!(
            (400..600).contains(&n),
            "each outcome near 500 of 2000, got {n}"
        );
    }
    // A different route is untouched.
    let f = Faults::new(cfg).unwrap();
    let other = route(Method::GET, "/api:1/service/abc/content/item");
    assert_eq!(
        f.decide(&other),
        Decision {
            latency: Duration::ZERO,
            action: Action::Pass
        }
    );
}

#[test]
fn rate_limit_answers_retry_after_and_resets_on_set() {
    let cfg = FaultConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.01,
            burst: 2,
        }),
        ..Default::default()
    };
    let f = Faults::new(cfg.clone()).unwrap();
    assert_eq!(f.decide(&state_patch()).action, Action::Pass);
    assert_eq!(f.decide(&state_patch()).action, Action::Pass);
    assert!(matches!(
        f.decide(&state_patch()).action,
        Action::RateLimited { retry_after_secs } if retry_after_secs >= 99
    ));
    assert_eq!(f.counts().rate_limited, 1);
    f.set_config(cfg).unwrap();
    assert_eq!(f.decide(&state_patch()).action, Action::Pass);
    // An invalid setting is refused and the old one stays.
    let bad = FaultConfig {
        rules: vec![FaultRule::new("bogus")],
        ..Default::default()
    };
    assert!(f.set_config(bad).is_err());
    assert!(f.config().rate_limit.is_some());
}

#[test]
fn flags_parse_into_rules() {
    let r =
        parse_rule("PATCH device2.state:error_rate=0.1,latency_ms=200,error_status=500").unwrap();
    assert_eq!(r.route, "PATCH device2.state");
    assert_eq!(
        (r.error_rate, r.latency_ms, r.error_status),
        (0.1, 200, 500)
    );
    let r = parse_rule("/api:1/service/:drop_rate=1").unwrap();
    assert_eq!((r.route.as_str(), r.drop_rate), ("/api:1/service/", 1.0));
    assert!(
        parse_rule("device2.state")
            .unwrap_err()
            .to_string()
            .contains("ROUTE:KEY=VALUE")
    );
    assert!(
        parse_rule("x:bogus=1")
            .unwrap_err()
            .to_string()
            .contains("unknown key")
    );
    assert!(
        parse_rule("x:error_rate=lots")
            .unwrap_err()
            .to_string()
            .contains("not a number")
    );
    assert_eq!(
        parse_rate_limit("10/20").unwrap(),
        RateLimit {
            per_second: 10.0,
            burst: 20
        }
    );
    assert_eq!(parse_rate_limit("0.5").unwrap().burst, 1);
    assert!(parse_rate_limit("ten").is_err());
    let args = FaultArgs {
        fault: vec!["content.upload:throttle_rate=1,retry_after_secs=3".into()],
        fault_seed: 9,
        rate_limit: Some("5".into()),
    };
    let cfg = args.to_config().unwrap();
    assert_eq!(cfg.seed, 9);
    assert_eq!(cfg.rules[0].throttle_rate, 1.0);
    assert_eq!(cfg.rate_limit.unwrap().burst, 5);
    let bad = FaultArgs {
        fault: vec!["device2.nope:error_rate=1".into()],
        ..Default::default()
    };
    assert!(bad.to_config().is_err());
}

#[test]
fn config_json_round_trips_and_rejects_unknown_fields() {
    let json = r#"{"seed":3,"rules":[{"route":"content.*","latency_ms":5}],"rate_limit":{"per_second":2.0,"burst":4}}"#;
    let cfg: FaultConfig = serde_json::from_str(json).unwrap();
    assert_eq!(cfg.rules[0].error_status, 503);
    assert_eq!(cfg.rules[0].retry_after_secs, 1);
    let back: FaultConfig = serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let err = serde_json::from_str::<FaultConfig>(r#"{"rules":[{"route":"*","eror_rate":1}]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("eror_rate"), "{err}");
}

/// The flag structs flatten into one command without name clashes, as `emulator` uses them.
#[test]
fn flags_flatten_into_a_clap_command() {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        faults: FaultArgs,
        #[command(flatten)]
        webhook: crate::emulator::webhook::WebhookArgs,
    }

    let cmd = Cmd::try_parse_from([
        "emulator",
        "--fault",
        "PATCH device2.state:error_rate=0.2",
        "--fault",
        "content.upload:drop_rate=0.1",
        "--fault-seed",
        "5",
        "--rate-limit",
        "10/20",
        "--webhook-url",
        "http://127.0.0.1:9/hooks/device2",
        "--webhook-event-types",
        "provisioned,deleted",
    ])
    .unwrap();
    let cfg = cmd.faults.to_config().unwrap();
    assert_eq!(cfg.rules.len(), 2);
    assert_eq!(cfg.seed, 5);
    assert_eq!(
        cfg.rate_limit,
        Some(RateLimit {
            per_second: 10.0,
            burst: 20
        })
    );
    assert_eq!(cmd.webhook.webhook_event_types, ["provisioned", "deleted"]);
    // Off by default.
    let cmd = Cmd::try_parse_from(["emulator"]).unwrap();
    assert!(cmd.faults.to_config().unwrap().is_off());
    // There is no flag that takes the secret itself.
    assert!(Cmd::try_parse_from(["emulator", "--webhook-secret", "x"]).is_err());
}
