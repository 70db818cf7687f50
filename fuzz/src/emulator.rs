//! The emulator's request parsing, driven through its real router in process: each input is
//! one HTTP request in a readable form,
//!
//! ```text
//! METHOD /path?query
//! Header-Name: value
//! ...
//!
//! body bytes
//! ```
//!
//! sent to a fresh model (one connector, one activated device, one content item) with
//! `tower::ServiceExt::oneshot`. The harness adds the `Host`, the device token or the
//! management token when the input names none, so mutations spend their time past the
//! authentication. Time is tokio's paused clock: a long poll's timeout passes at once.
//! Whatever the request, the emulator answers (never panics) with a status below 500, and
//! the answer's body can be read whole.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use tower::ServiceExt;

use otau_operator::emulator::clock::ManualClock;
use otau_operator::emulator::model::{ContentItem, Model, ModelConfig, NewIdentity};
use otau_operator::emulator::server::{AppState, MANAGEMENT_PREFIX, ServerOptions, router};

/// The connector of every input.
pub const CID: &str = "fuzz0connector00";
/// The management token the model accepts.
pub const MTOKEN: &str = "fuzz-management-token";
/// The activated device.
pub const IDENTITY: &str = "dev-000001";
/// The content item on the connector.
pub const CONTENT: &str = "fw.bin";
/// The model's clock (µs): 2025-01-01T00:00:00Z.
const START: i64 = 1_735_689_600_000_000;
/// The most of an answer's body read.
const MAX_BODY: usize = 64 * 1024 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

/// A request as the input spells it.
struct Spelled {
    method: Vec<u8>,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn spell(data: &[u8]) -> Spelled {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], data[at + 2..].to_vec()),
        None => (data, Vec::new()),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(at) => (&first[..at], &first[at + 1..]),
        None => (first, &b"/"[..]),
    };
    let headers = lines
        .filter_map(|line| {
            let at = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..at])
                .trim()
                .to_ascii_lowercase();
            let value = line[at + 1..].trim_ascii().to_vec();
            Some((name, value))
        })
        .collect();
    Spelled {
        method: method.to_vec(),
        target: String::from_utf8_lossy(target).into_owned(),
        headers,
        body,
    }
}

/// A fresh model: the connector, an activated device (its token returned), a content item.
fn model() -> (Arc<Model>, String) {
    let config = ModelConfig {
        management_tokens: vec![MTOKEN.to_owned()],
        event_capacity: 16,
        ..ModelConfig::default()
    };
    let model = Model::new(config, Arc::new(ManualClock::new(START)));
    let conn = model.add_connector(CID).expect("connector");
    conn.add_identity(IDENTITY, NewIdentity::default())
        .expect("identity");
    let token = conn.activate(IDENTITY).expect("activate");
    conn.content()
        .put(ContentItem {
            id: CONTENT.to_owned(),
            content_type: "application/octet-stream".to_owned(),
            data: axum::body::Bytes::from_static(b"firmware bytes"),
            tags: Default::default(),
            last_modified: START,
        })
        .expect("content");
    (model, token)
}

/// Sends the request the input spells to the emulator's whole router, with `defaults`
/// (header, value) added where the input has no header of that name.
fn send(data: &[u8], prefix: &str, defaults: &[(&str, String)], model: Arc<Model>) {
    let spelled = spell(data);
    let Ok(method) = Method::from_bytes(&spelled.method) else {
        return;
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{prefix}{}", spelled.target));
    for (name, value) in defaults {
        if !spelled.headers.iter().any(|(n, _)| n == name) {
            builder = builder.header(*name, value.as_str());
        }
    }
    for (name, value) in &spelled.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let Ok(request) = builder.body(Body::from(spelled.body)) else {
        return;
    };
    let state = AppState {
        model,
        options: Arc::new(ServerOptions {
            default_connector: Some(CID.to_owned()),
            ..ServerOptions::default()
        }),
    };
    let app = router(state);
    runtime().block_on(async move {
        let response = app
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        assert!(
            status < StatusCode::INTERNAL_SERVER_ERROR,
            "the emulator answered {status}"
        );
        axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .expect("the answer's body reads whole");
    });
}

/// A device API request (exosite-platform.md §3): `Host` and the device's token
/// (`X-Exosite-CIK`) are added unless the input gives them (or an `Authorization`).
pub fn device_request(data: &[u8]) {
    let (model, token) = model();
    let spelled_auth = spell(data)
        .headers
        .iter()
        .any(|(n, _)| n == "authorization");
    let mut defaults = vec![("host", format!("{CID}.m2.exosite.io"))];
    if !spelled_auth {
        defaults.push(("x-exosite-cik", token));
    }
    send(data, "", &defaults, model);
}

/// A management API request (exosite-platform.md §5), its path under `/api:1`: the
/// management token is added unless the input gives an `Authorization`.
pub fn management_request(data: &[u8]) {
    let (model, _) = model();
    let defaults = [("authorization", format!("token {MTOKEN}"))];
    send(data, MANAGEMENT_PREFIX, &defaults, model);
}
