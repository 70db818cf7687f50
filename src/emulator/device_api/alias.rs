//! `/onep:v1/stack/alias` (write, read, write-then-read, long poll) and `/onep:v1/stack/record`
//! (exosite-platform.md §3.6 to §3.9, §3.11).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{
    DeviceConnector, FORM_CONTENT_TYPE, MAX_REQUEST_TIMEOUT_MS, authenticate, encode_form,
    model_error, parse_form, require_content_type, text,
};
use crate::emulator::model::{Connector, PollSince, WriteOrigin};
use crate::emulator::server::{AppState, LastModifiedFormat};

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

fn origin(remote: Option<Extension<ConnectInfo<SocketAddr>>>) -> WriteOrigin {
    WriteOrigin {
        ip: remote.map(|c| c.0.0.ip().to_string()).unwrap_or_default(),
        connection_id: format!("r-{}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed)),
    }
}

/// The alias names of a query string `?a&b` (values, if any, are ignored).
fn query_aliases(query: Option<&str>) -> Vec<String> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, _)| k.into_owned())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn read_response(connector: &Connector, identity: &str, aliases: &[String]) -> Response {
    let names: Vec<&str> = aliases.iter().map(String::as_str).collect();
    match connector.device_read(identity, &names) {
        Ok(values) if values.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(values) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(FORM_CONTENT_TYPE),
            )],
            encode_form(values.iter().map(|(k, v)| (k.as_str(), &**v))),
        )
            .into_response(),
        Err(e) => model_error(&e),
    }
}

/// `GET /onep:v1/stack/alias?a&b`: a read, or a long poll when `Request-Timeout` is present.
pub(super) async fn read_or_poll(
    State(state): State<AppState>,
    Extension(DeviceConnector(connector)): Extension<DeviceConnector>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let identity = match authenticate(&connector, &headers) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let aliases = query_aliases(query.as_deref());
    let Some(timeout) = headers.get("request-timeout") else {
        return read_response(&connector, &identity, &aliases);
    };
    let [alias] = aliases.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            "a long poll names exactly one alias",
        );
    };
    let Some(timeout) = timeout.to_str().ok().and_then(long_poll_timeout) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Request-Timeout must be a whole number of milliseconds",
        );
    };
    let since = match headers.get(header::IF_MODIFIED_SINCE) {
        None => PollSince::After(connector.now_micros()),
        Some(v) => match v.to_str().ok().and_then(parse_if_modified_since) {
            Some(s) => PollSince::Seconds(s),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "If-Modified-Since must be unix seconds or an HTTP-date",
                );
            }
        },
    };
    match connector.poll_set(&identity, alias, since, timeout).await {
        Ok(Some(v)) => {
            let secs = v.set_modified.div_euclid(1_000_000);
            let last_modified = match state.options.last_modified_format {
                LastModifiedFormat::Unix => secs.to_string(),
                LastModifiedFormat::HttpDate => http_date(secs),
            };
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, FORM_CONTENT_TYPE.to_string()),
                    (header::LAST_MODIFIED, last_modified),
                ],
                encode_form([(alias.as_str(), &*v.value)]),
            )
                .into_response()
        }
        Ok(None) => StatusCode::NOT_MODIFIED.into_response(),
        Err(e) => model_error(&e),
    }
}

/// `If-Modified-Since` as unix seconds: a number, or an HTTP-date.
pub(crate) fn parse_if_modified_since(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    let t = httpdate::parse_http_date(v).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Unix seconds as an HTTP-date.
pub(crate) fn http_date(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    httpdate::fmt_http_date(t)
}

/// `POST /onep:v1/stack/alias[?a&b]`: write the body's aliases, then read the query's.
pub(super) async fn write(
    Extension(DeviceConnector(connector)): Extension<DeviceConnector>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers) {
        return r;
    }
    let identity = match authenticate(&connector, &headers) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let pairs = parse_form(&body);
    if !pairs.is_empty() {
        let values: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = connector.device_write(&identity, &values, &origin(remote)) {
            return model_error(&e);
        }
    }
    let aliases = query_aliases(query.as_deref());
    if aliases.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        read_response(&connector, &identity, &aliases)
    }
}

/// `POST /onep:v1/stack/record`: `alias=<a>&<ts>=<v>&<ts>=<v>&alias=<b>&…`.
pub(super) async fn record(
    Extension(DeviceConnector(connector)): Extension<DeviceConnector>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers) {
        return r;
    }
    let identity = match authenticate(&connector, &headers) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut entries: Vec<(String, Vec<(i64, String)>)> = Vec::new();
    for (k, v) in parse_form(&body) {
        if k == "alias" {
            entries.push((v, Vec::new()));
            continue;
        }
        let Ok(ts) = k.parse::<i64>() else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("record keys are `alias` or unix seconds, not {k:?}"),
            );
        };
        let Some((_, points)) = entries.last_mut() else {
            return text(
                StatusCode::BAD_REQUEST,
                "a record body starts with alias=<name>",
            );
        };
        points.push((ts, v));
    }
    match connector.record(&identity, &entries, &origin(remote)) {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(conflict)) => (
            StatusCode::CONFLICT,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(FORM_CONTENT_TYPE),
            )],
            conflict.body,
        )
            .into_response(),
        Err(e) => model_error(&e),
    }
}

/// The wait of a long poll from its `Request-Timeout` header (milliseconds), capped at
/// [`MAX_REQUEST_TIMEOUT_MS`] (exosite-platform.md §3.9); `None` when it is not a number.
fn long_poll_timeout(header: &str) -> Option<Duration> {
    let ms = header.trim().parse::<u64>().ok()?;
    Some(Duration::from_millis(ms.min(MAX_REQUEST_TIMEOUT_MS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §9 Must: long poll with `Request-Timeout` (cap 300000): larger values wait 300 s at the
    /// most; values that are not whole milliseconds are refused (400).
    #[test]
    fn request_timeout_is_capped_at_300000_ms() {
        assert_eq!(long_poll_timeout("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(
            long_poll_timeout(" 300000 "),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            long_poll_timeout("999999999"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(long_poll_timeout("0"), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "30s", "ten"] {
            assert_eq!(long_poll_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn if_modified_since_in_both_forms() {
        assert_eq!(parse_if_modified_since("0"), Some(0));
        assert_eq!(parse_if_modified_since(" 1408088308 "), Some(1_408_088_308));
        assert_eq!(
            parse_if_modified_since("Fri, 15 Jun 2018 19:04:13 GMT"),
            Some(1_529_089_453)
        );
        assert_eq!(parse_if_modified_since("yesterday"), None);
        assert_eq!(http_date(1_529_089_453), "Fri, 15 Jun 2018 19:04:13 GMT");
    }

    #[test]
    fn query_names_are_decoded() {
        assert_eq!(
            query_aliases(Some("config_otau&otau%5Fin&x=1")),
            vec!["config_otau", "otau_in", "x"]
        );
        assert!(query_aliases(None).is_empty());
    }
}
