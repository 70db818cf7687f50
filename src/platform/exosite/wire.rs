//! The management API's JSON, read tolerantly and turned into domain types. Nothing here
//! leaves the `exosite` module.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::otau::{CONFIG_OTAU, OTAU_IN};
use crate::platform::error::PlatformError;
use crate::platform::types::{
    ConnectorSettings, ContentInfo, Identity, IdentityState, ResourceSettings, ResourceState, Tag,
};

/// Parses a JSON body or reports an invalid response for `operation`.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(
    operation: &'static str,
    body: &[u8],
) -> Result<T, PlatformError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's text may quote the answer; it goes to the debug log only.
        tracing::debug!(operation, error = %e, "unexpected JSON from the platform");
        PlatformError::InvalidResponse {
            operation,
            message: format!(
                "unexpected JSON ({} error at line {}, column {})",
                match e.classify() {
                    serde_json::error::Category::Io => "read",
                    serde_json::error::Category::Syntax => "syntax",
                    serde_json::error::Category::Data => "data",
                    serde_json::error::Category::Eof => "end of input",
                },
                e.line(),
                e.column()
            ),
        }
    })
}

/// A JSON value as text: strings as they are, `null` as nothing, anything else as JSON.
fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// A time in s, ms or µs, normalised to µs the way connector templates do
/// (exosite-platform.md §1.3: `< 1e11` is seconds, `< 1e14` milliseconds).
pub(crate) fn micros(value: &Value) -> Option<i64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let us = if n < 1e11 {
        n * 1e6
    } else if n < 1e14 {
        n * 1e3
    } else {
        n
    };
    Some(us as i64)
}

/// `GET /token/<t>`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenWire {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    ttl: Option<Value>,
}

impl TokenWire {
    pub fn into_parts(self, operation: &'static str) -> Result<(String, Duration), PlatformError> {
        let ttl = self
            .ttl
            .as_ref()
            .and_then(|v| match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or(PlatformError::InvalidResponse {
                operation,
                message: "the token information has no numeric ttl".to_string(),
            })?;
        Ok((
            self.email.unwrap_or_default(),
            Duration::from_secs_f64(ttl.min(1e10)),
        ))
    }
}

/// `GET /device2`.
#[derive(Debug, Deserialize)]
pub(crate) struct SettingsWire {
    #[serde(default)]
    fqdn: Option<String>,
    #[serde(default)]
    resources: Option<BTreeMap<String, ResourceSettingsWire>>,
}

#[derive(Debug, Deserialize)]
struct ResourceSettingsWire {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    settable: Option<bool>,
}

impl From<SettingsWire> for ConnectorSettings {
    fn from(w: SettingsWire) -> Self {
        ConnectorSettings {
            fqdn: w.fqdn.unwrap_or_default(),
            resources: w
                .resources
                .unwrap_or_default()
                .into_iter()
                .map(|(alias, r)| {
                    (
                        alias,
                        ResourceSettings {
                            format: r.format.unwrap_or_default(),
                            settable: r.settable.unwrap_or(false),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One resource's `{set, reported, timestamp}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResourceWire {
    #[serde(default)]
    set: Option<Value>,
    #[serde(default)]
    reported: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
}

impl From<ResourceWire> for ResourceState {
    fn from(w: ResourceWire) -> Self {
        ResourceState {
            timestamp: w.timestamp.as_ref().and_then(micros),
            set: text(w.set),
            reported: text(w.reported),
        }
    }
}

/// The state map `{alias: {set, reported, timestamp}}`; aliases other than the OTAU ones are
/// dropped.
pub(crate) fn identity_state(mut map: BTreeMap<String, ResourceWire>) -> IdentityState {
    IdentityState {
        config_otau: map.remove(CONFIG_OTAU).unwrap_or_default().into(),
        otau_in: map.remove(OTAU_IN).unwrap_or_default().into(),
    }
}

/// `{name, value}`.
#[derive(Debug, Deserialize)]
struct TagWire {
    name: String,
    #[serde(default)]
    value: Option<Value>,
}

/// An identity object.
#[derive(Debug, Deserialize)]
pub(crate) struct IdentityWire {
    identity: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tags: Option<Vec<TagWire>>,
    #[serde(default)]
    state: Option<BTreeMap<String, ResourceWire>>,
    #[serde(default)]
    created: Option<Value>,
}

impl From<IdentityWire> for Identity {
    fn from(w: IdentityWire) -> Self {
        Identity {
            identity: w.identity,
            status: w.status.unwrap_or_default(),
            tags: w
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| Tag {
                    name: t.name,
                    value: text(t.value).unwrap_or_default(),
                })
                .collect(),
            state: identity_state(w.state.unwrap_or_default()),
            created: w.created.as_ref().and_then(micros),
        }
    }
}

/// `GET /device2/identity/`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListWire {
    #[serde(default, rename = "mayLoadMore")]
    pub may_load_more: Option<bool>,
    #[serde(default)]
    pub devices: Vec<IdentityWire>,
}

/// A content info object.
#[derive(Debug, Deserialize)]
pub(crate) struct ContentWire {
    id: String,
    #[serde(default, rename = "type")]
    content_type: Option<String>,
    #[serde(default)]
    length: Option<Value>,
    #[serde(default)]
    last_modified: Option<Value>,
    #[serde(default)]
    tags: Option<Value>,
}

impl From<ContentWire> for ContentInfo {
    fn from(w: ContentWire) -> Self {
        let tags = match w.tags {
            // `{"name": "value"}`, the content service's form.
            Some(Value::Object(map)) => map
                .into_iter()
                .filter_map(|(k, v)| text(Some(v)).map(|v| (k, v)))
                .collect(),
            // `[{"name", "value"}]`, the GraphQL form.
            Some(Value::Array(items)) => items
                .into_iter()
                .filter_map(|i| serde_json::from_value::<TagWire>(i).ok())
                .map(|t| (t.name, text(t.value).unwrap_or_default()))
                .collect(),
            _ => BTreeMap::new(),
        };
        ContentInfo {
            content_type: w.content_type.unwrap_or_default(),
            length: w
                .length
                .and_then(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .unwrap_or(0),
            last_modified: text(w.last_modified).unwrap_or_default(),
            tags,
            id: w.id,
        }
    }
}

/// The upload instructions of step 1 (and of ExoSense `createContent`).
#[derive(Debug, Deserialize)]
pub(crate) struct UploadFormWire {
    pub url: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub inputs: Option<Value>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub enctype: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_normalised_to_micros() {
        assert_eq!(
            micros(&serde_json::json!(1_487_021_046)),
            Some(1_487_021_046_000_000)
        );
        assert_eq!(
            micros(&serde_json::json!(1_487_021_046_160i64)),
            Some(1_487_021_046_160_000)
        );
        assert_eq!(
            micros(&serde_json::json!(1_487_021_046_160_363i64)),
            Some(1_487_021_046_160_363)
        );
        assert_eq!(micros(&serde_json::json!("x")), None);
    }

    #[test]
    fn identity_objects_parse_tolerantly() {
        let w: IdentityWire = serde_json::from_str(
            r#"{"identity":"00AB01","status":"provisioned","locked":false,
                "tags":[{"name":"region","value":"eu"},{"name":"n","value":3}],
                "state":{"config_otau":{"set":"{\"version\":\"1\"}","reported":null,"timestamp":1487021046160363},
                         "otau_in":{"reported":"{\"version\":\"1\",\"status\":\"INIT\"}","timestamp":1487021046},
                         "other":{"set":"1"}},
                "created":1700000000000001}"#,
        )
        .expect("parse");
        let id: Identity = w.into();
        assert_eq!(id.identity, "00AB01");
        assert_eq!(id.tags[1].value, "3");
        assert_eq!(
            id.state.config_otau.set.as_deref(),
            Some("{\"version\":\"1\"}")
        );
        assert_eq!(id.state.config_otau.reported, None);
        assert_eq!(id.state.otau_in.timestamp, Some(1_487_021_046_000_000));
        assert_eq!(id.created, Some(1_700_000_000_000_001));
        let w: IdentityWire = serde_json::from_str(r#"{"identity":"x"}"#).expect("minimal");
        let id: Identity = w.into();
        assert_eq!(id.created, None);
        assert!(id.tags.is_empty());
    }

    #[test]
    fn content_tags_in_both_forms() {
        let w: ContentWire = serde_json::from_str(
            r#"{"id":"a","type":"text/plain","length":"5","last_modified":"2017-02-10T17:43:45.000Z","tags":{"sha256":"ab","n":2}}"#,
        )
        .expect("parse");
        let c: ContentInfo = w.into();
        assert_eq!(c.length, 5);
        assert_eq!(c.tags.get("n").map(String::as_str), Some("2"));
        let w: ContentWire =
            serde_json::from_str(r#"{"id":"a","tags":[{"name":"pid","value":"p"}]}"#)
                .expect("parse");
        let c: ContentInfo = w.into();
        assert_eq!(c.tags.get("pid").map(String::as_str), Some("p"));
    }
}
