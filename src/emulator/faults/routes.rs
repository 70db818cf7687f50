//! Route names: one short, stable name per emulator endpoint (`device2.state`, `content.upload`,
//! `device.write`, ...), used by fault rules, request counting and `/metrics`.

use axum::extract::OriginalUri;
use axum::http::{Method, Request, header};

/// Which API a route belongs to (the rate limiter keeps one bucket per connector and API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// The management API under `/api:1/`.
    Management,
    /// The device HTTP API.
    Device,
    /// ExoSense GraphQL.
    Graphql,
    /// The object store of presigned uploads and downloads.
    ObjectStore,
    /// Admin endpoints and `/metrics`: never faulted, never rate limited.
    Admin,
    /// The device MQTT API (`mqtt.connect`, `mqtt.publish`, `mqtt.deliver`): faulted by rules
    /// that name it, never rate limited (MQTT has no answer that says "later").
    Mqtt,
}

impl Api {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Management => "management",
            Api::Device => "device",
            Api::Graphql => "graphql",
            Api::ObjectStore => "objectstore",
            Api::Admin => "admin",
            Api::Mqtt => "mqtt",
        }
    }
}

/// What the emulator knows about a request's route before handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The route name (see [`route_name`]).
    pub name: &'static str,
    /// The API.
    pub api: Api,
    /// The connector the request addresses, if the path or `Host` names one (the solution id
    /// for service calls).
    pub connector: Option<String>,
    /// The HTTP method.
    pub method: Method,
    /// The full request path (also when the router is nested).
    pub path: String,
}

impl RouteInfo {
    /// A step of an MQTT session on `connector`: `name` is `mqtt.connect` (a CONNECT was
    /// read), `mqtt.publish` (a device PUBLISH) or `mqtt.deliver` (a cloud write about to be
    /// published to the device). Its method is `MQTT` (so `MQTT mqtt.*` is a valid pattern)
    /// and its path `mqtt:<name>`, which no path prefix matches.
    pub fn mqtt(name: &'static str, connector: Option<&str>) -> RouteInfo {
        RouteInfo {
            name,
            api: Api::Mqtt,
            connector: connector.map(str::to_string),
            method: Method::from_bytes(b"MQTT").unwrap_or(Method::POST),
            path: format!("mqtt:{name}"),
        }
    }

    /// The route of `req`. Works on a nested router too: it reads the original URI.
    pub fn of<B>(req: &Request<B>) -> RouteInfo {
        let path = req
            .extensions()
            .get::<OriginalUri>()
            .map(|u| u.0.path().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let (name, api) = route_name(req.method(), &path);
        let connector = match api {
            Api::Management => path_connector(&path),
            Api::Device => host_connector(host),
            _ => None,
        };
        RouteInfo {
            name,
            api,
            connector,
            method: req.method().clone(),
            path,
        }
    }
}

/// The route name and API of a request path (the full path, `/api:1/...` included).
///
/// | Path | Name |
/// |---|---|
/// | `/api:1/token`, `/api:1/token/<t>` | `token`, `token.item` |
/// | `/api:1/service/<cid>/device2` | `device2.settings` |
/// | `…/device2/identity[/]`, `…/identity/<id>`, `…/identity/<id>/state` | `device2.list`, `device2.identity`, `device2.state` |
/// | `…/content/item[/]`, `…/item/<id>`, `…/upload`, `…/download` | `content.list`, `content.item`, `content.upload`, `content.download` |
/// | `/api:1/solution/<sid>/serviceconfig[/]`, `…/call/<op>` | `solution.serviceconfig`, `solution.call` |
/// | any other `/api:1/…` | `management.other` |
/// | `/api/graphql` | `graphql` |
/// | `/objectstore/content`, `/objectstore/download/…` | `objectstore.upload`, `objectstore.download` |
/// | `/admin/…`, `/metrics` | `admin`, `metrics` |
/// | `/provision/activate`, `/provision/download` | `device.activate`, `device.content` |
/// | `GET`/`POST /onep:v1/stack/alias`, `/onep:v1/stack/record` | `device.read`, `device.write`, `device.record` |
/// | `/timestamp`, anything else | `device.timestamp`, `device.other` |
pub fn route_name(method: &Method, path: &str) -> (&'static str, Api) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api:1", rest @ ..] => (management_route(rest), Api::Management),
        ["api", "graphql"] => ("graphql", Api::Graphql),
        ["objectstore", "content", ..] => ("objectstore.upload", Api::ObjectStore),
        ["objectstore", "download", ..] => ("objectstore.download", Api::ObjectStore),
        ["objectstore", ..] => ("objectstore.other", Api::ObjectStore),
        ["admin", ..] => ("admin", Api::Admin),
        ["metrics"] => ("metrics", Api::Admin),
        ["provision", "activate"] => ("device.activate", Api::Device),
        ["provision", "download"] => ("device.content", Api::Device),
        ["onep:v1", "stack", "alias"] if method == Method::POST => ("device.write", Api::Device),
        ["onep:v1", "stack", "alias"] => ("device.read", Api::Device),
        ["onep:v1", "stack", "record"] => ("device.record", Api::Device),
        ["timestamp"] => ("device.timestamp", Api::Device),
        _ => ("device.other", Api::Device),
    }
}

fn management_route(segs: &[&str]) -> &'static str {
    match segs {
        ["token"] => "token",
        ["token", _] => "token.item",
        ["service", _, "device2"] => "device2.settings",
        ["service", _, "device2", "identity"] => "device2.list",
        ["service", _, "device2", "identity", _] => "device2.identity",
        ["service", _, "device2", "identity", _, "state"] => "device2.state",
        ["service", _, "content", "item"] => "content.list",
        ["service", _, "content", "item", _] => "content.item",
        ["service", _, "content", "item", _, "upload"] => "content.upload",
        ["service", _, "content", "item", _, "download"] => "content.download",
        ["solution", _, "serviceconfig"] => "solution.serviceconfig",
        ["solution", _, "serviceconfig", _, "call", _] => "solution.call",
        _ => "management.other",
    }
}

/// Every route name [`route_name`] can give, for documentation and validation of fault rules.
pub const ROUTE_NAMES: [&str; 29] = [
    "token",
    "token.item",
    "device2.settings",
    "device2.list",
    "device2.identity",
    "device2.state",
    "content.list",
    "content.item",
    "content.upload",
    "content.download",
    "solution.serviceconfig",
    "solution.call",
    "management.other",
    "graphql",
    "objectstore.upload",
    "objectstore.download",
    "objectstore.other",
    "admin",
    "metrics",
    "device.activate",
    "device.content",
    "device.read",
    "device.write",
    "device.record",
    "device.timestamp",
    "device.other",
    "mqtt.connect",
    "mqtt.publish",
    "mqtt.deliver",
];

/// The connector (or solution) id in a management path `/api:1/service/<cid>/…`.
fn path_connector(path: &str) -> Option<String> {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    match (segs.next(), segs.next(), segs.next()) {
        (Some("api:1"), Some("service" | "solution"), Some(id)) => Some(id.to_string()),
        _ => None,
    }
}

/// The connector named by a device API `Host` (`<cid>.m2.<domain>`).
fn host_connector(host: &str) -> Option<String> {
    let host = host.split(':').next().unwrap_or("");
    let mut labels = host.split('.');
    match (labels.next(), labels.next()) {
        (Some(cid), Some("m2")) if !cid.is_empty() => Some(cid.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(method: Method, path: &str) -> &'static str {
        route_name(&method, path).0
    }

    #[test]
    fn management_paths_get_their_names() {
        let base = "/api:1/service/abc";
        assert_eq!(name(Method::POST, "/api:1/token/"), "token");
        assert_eq!(name(Method::GET, "/api:1/token/xyz"), "token.item");
        assert_eq!(
            name(Method::GET, &format!("{base}/device2")),
            "device2.settings"
        );
        assert_eq!(
            name(Method::GET, &format!("{base}/device2/identity/")),
            "device2.list"
        );
        assert_eq!(
            name(Method::PUT, &format!("{base}/device2/identity/d1")),
            "device2.identity"
        );
        assert_eq!(
            name(Method::PATCH, &format!("{base}/device2/identity/d1/state")),
            "device2.state"
        );
        assert_eq!(
            name(Method::GET, &format!("{base}/content/item")),
            "content.list"
        );
        assert_eq!(
            name(Method::GET, &format!("{base}/content/item/a%2Fb")),
            "content.item"
        );
        assert_eq!(
            name(Method::GET, &format!("{base}/content/item/f/upload")),
            "content.upload"
        );
        assert_eq!(
            name(Method::GET, &format!("{base}/content/item/f/download")),
            "content.download"
        );
        assert_eq!(
            name(
                Method::POST,
                "/api:1/solution/s1/serviceconfig/c/call/listIdentities"
            ),
            "solution.call"
        );
        assert_eq!(
            name(Method::GET, "/api:1/business/b/solution/"),
            "management.other"
        );
    }

    #[test]
    fn other_paths_get_their_names() {
        assert_eq!(
            route_name(&Method::POST, "/api/graphql"),
            ("graphql", Api::Graphql)
        );
        assert_eq!(
            name(Method::POST, "/objectstore/content"),
            "objectstore.upload"
        );
        assert_eq!(
            name(Method::GET, "/objectstore/download/abc/f"),
            "objectstore.download"
        );
        assert_eq!(
            route_name(&Method::PUT, "/admin/faults"),
            ("admin", Api::Admin)
        );
        assert_eq!(
            route_name(&Method::GET, "/metrics"),
            ("metrics", Api::Admin)
        );
        assert_eq!(name(Method::POST, "/provision/activate"), "device.activate");
        assert_eq!(name(Method::GET, "/provision/download"), "device.content");
        assert_eq!(name(Method::POST, "/onep:v1/stack/alias"), "device.write");
        assert_eq!(name(Method::GET, "/onep:v1/stack/alias"), "device.read");
        assert_eq!(name(Method::POST, "/onep:v1/stack/record"), "device.record");
        assert_eq!(name(Method::GET, "/timestamp"), "device.timestamp");
        assert_eq!(name(Method::GET, "/nope"), "device.other");
        for n in [
            "device2.state",
            "content.upload",
            "device.write",
            "graphql",
            "objectstore.upload",
        ] {
            assert!(ROUTE_NAMES.contains(&n), "{n}");
        }
    }

    #[test]
    fn connectors_come_from_path_or_host() {
        let req = Request::builder()
            .uri("/api:1/service/abc/device2/identity/d/state")
            .body(())
            .unwrap();
        let r = RouteInfo::of(&req);
        assert_eq!(
            (r.name, r.api, r.connector.as_deref()),
            ("device2.state", Api::Management, Some("abc"))
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri("/onep:v1/stack/alias")
            .header("host", "xyz.m2.exosite.io:443")
            .body(())
            .unwrap();
        let r = RouteInfo::of(&req);
        assert_eq!(
            (r.name, r.connector.as_deref()),
            ("device.write", Some("xyz"))
        );
        let req = Request::builder()
            .uri("/timestamp")
            .header("host", "127.0.0.1:8080")
            .body(())
            .unwrap();
        assert_eq!(RouteInfo::of(&req).connector, None);
    }
}
