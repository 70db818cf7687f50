//! The `config_otau` manifest (exosite-platform.md §2.3).

use serde::Serialize;
use serde_json::Value;

use super::{FIRST_ATTEMPT, MAX_MANIFEST_BYTES};

/// A parsed `config_otau` manifest.
///
/// [`Manifest::to_json`] emits the operator's exact serialisation: compact JSON with the keys in
/// the order `version`, `name`, `description` (left out when empty), `type`, `payload`,
/// `attempt` (only for attempt 2 and later) and `rollout` (only when set). [`Manifest::parse`]
/// accepts any key order, a missing or empty `description`, and unknown keys.
///
/// Equality leaves [`Manifest::rollout`] out: the marker says which Rollout wrote the value,
/// not which update it is, so a stored value with or without a marker, or with another
/// Rollout's, is the same manifest (no device is written twice for a marker).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Distinguishes this OTAU from others, e.g. a version number.
    pub version: String,
    /// Human-readable name.
    pub name: String,
    /// Free text; empty when absent.
    pub description: String,
    /// The payload, which also decides the manifest `type`.
    pub payload: Payload,
    /// Notification attempt: 1 for the first notification, k ≥ 2 for the k-th retry write.
    pub attempt: u32,
    /// The marker of the Rollout that wrote the value (the `rollout` key,
    /// exosite-platform.md §2.3), `None` when absent or not a string. Not part of equality.
    pub rollout: Option<String>,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.name == other.name
            && self.description == other.description
            && self.payload == other.payload
            && self.attempt == other.attempt
    }
}

impl Eq for Manifest {}

/// The manifest payload; its variant decides the `type` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `type: "URL_LIST"`: content ids (no host) and links (with host).
    UrlList(Vec<String>),
    /// `type: "FILE"`: one URL.
    File(String),
    /// `type: "JSON"`: an inline JSON object; nothing to download.
    Json(serde_json::Map<String, Value>),
}

impl Payload {
    /// The manifest `type` string for this payload.
    pub fn type_name(&self) -> &'static str {
        match self {
            Payload::UrlList(_) => "URL_LIST",
            Payload::File(_) => "FILE",
            Payload::Json(_) => "JSON",
        }
    }

    /// The items a device must fetch, classified as content ids or links.
    pub fn items(&self) -> Vec<PayloadItem<'_>> {
        match self {
            Payload::UrlList(items) => items.iter().map(|i| PayloadItem::classify(i)).collect(),
            Payload::File(url) => vec![PayloadItem::classify(url)],
            Payload::Json(_) => Vec::new(),
        }
    }
}

/// One payload item, classified (exosite-platform.md §2.3: an absolute URL with scheme and host
/// is a link; anything else is a content id in the connector's content area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadItem<'a> {
    /// A content id, downloaded through `GET /provision/download?id=<id>`.
    ContentId(&'a str),
    /// An external link, fetched as is.
    Link(&'a str),
}

impl<'a> PayloadItem<'a> {
    /// Classifies one payload string.
    pub fn classify(item: &'a str) -> Self {
        match url::Url::parse(item) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => PayloadItem::Link(item),
            _ => PayloadItem::ContentId(item),
        }
    }
}

/// Why a `config_otau` value is not a usable manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The value is not JSON text.
    #[error("config_otau is not valid JSON: {0}")]
    NotJson(String),
    /// The value is JSON but not an object.
    #[error("config_otau must be a JSON object, found {0}")]
    NotObject(&'static str),
    /// A required key is missing.
    #[error("config_otau has no `{0}` key")]
    MissingKey(&'static str),
    /// A key has the wrong JSON type.
    #[error("config_otau key `{key}` must be {expected}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The `type` is none of `URL_LIST`, `FILE`, `JSON`.
    #[error("config_otau type `{0}` is not one of URL_LIST, FILE, JSON")]
    UnknownType(String),
    /// `attempt` is present but not an integer ≥ 1.
    #[error("config_otau attempt must be an integer >= 1")]
    BadAttempt,
    /// The serialised manifest is longer than [`MAX_MANIFEST_BYTES`].
    #[error(
        "config_otau would be {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit of a device2 string value"
    )]
    TooLarge(usize),
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    version: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    payload: WirePayload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WirePayload<'a> {
    List(&'a [String]),
    One(&'a str),
    Object(&'a serde_json::Map<String, Value>),
}

impl Manifest {
    /// A `URL_LIST` manifest for attempt 1.
    pub fn url_list(
        version: impl Into<String>,
        name: impl Into<String>,
        description: impl Into<String>,
        items: Vec<String>,
    ) -> Self {
        Manifest {
            version: version.into(),
            name: name.into(),
            description: description.into(),
            payload: Payload::UrlList(items),
            attempt: FIRST_ATTEMPT,
            rollout: None,
        }
    }

    /// The same manifest carrying the marker of the Rollout that writes it (`None`: none).
    pub fn with_rollout(&self, marker: Option<&str>) -> Self {
        Manifest {
            rollout: marker.map(str::to_owned),
            ..self.clone()
        }
    }

    /// The widest value a Rollout writes for this manifest: a two-digit attempt (1 + at most
    /// 10 retries) and a 16-digit marker. A manifest whose widest value fits
    /// [`MAX_MANIFEST_BYTES`] fits every write.
    pub fn widest_written(&self) -> Self {
        self.with_attempt(99).with_rollout(Some("0000000000000000"))
    }

    /// Whether the value carries exactly this marker.
    pub fn marked_by(&self, marker: &str) -> bool {
        self.rollout.as_deref() == Some(marker)
    }

    /// The same manifest for notification attempt `attempt` (1 = the first).
    pub fn with_attempt(&self, attempt: u32) -> Self {
        Manifest {
            attempt: attempt.max(FIRST_ATTEMPT),
            ..self.clone()
        }
    }

    /// The exact `config_otau` string the operator writes.
    pub fn to_json(&self) -> String {
        let payload = match &self.payload {
            Payload::UrlList(items) => WirePayload::List(items),
            Payload::File(url) => WirePayload::One(url),
            Payload::Json(obj) => WirePayload::Object(obj),
        };
        let wire = Wire {
            version: &self.version,
            name: &self.name,
            description: &self.description,
            kind: self.payload.type_name(),
            payload,
            attempt: (self.attempt > FIRST_ATTEMPT).then_some(self.attempt),
            rollout: self.rollout.as_deref(),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// [`Manifest::to_json`], refusing values over [`MAX_MANIFEST_BYTES`].
    pub fn to_json_checked(&self) -> Result<String, ManifestError> {
        let s = self.to_json();
        if s.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(s.len()));
        }
        Ok(s)
    }

    /// Parses a `config_otau` value as a device or the emulator would read it.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ManifestError::NotJson(e.to_string()))?;
        let obj = match &value {
            Value::Object(o) => o,
            other => return Err(ManifestError::NotObject(json_kind(other))),
        };
        let string = |key: &'static str, required: bool| -> Result<String, ManifestError> {
            match obj.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Null) | None if !required => Ok(String::new()),
                None => Err(ManifestError::MissingKey(key)),
                Some(_) => Err(ManifestError::WrongType {
                    key,
                    expected: "a string",
                }),
            }
        };
        let version = string("version", true)?;
        let name = string("name", true)?;
        let description = string("description", false)?;
        let kind = string("type", true)?;
        let raw_payload = obj
            .get("payload")
            .ok_or(ManifestError::MissingKey("payload"))?;
        let payload = match kind.as_str() {
            "URL_LIST" => match raw_payload {
                Value::Array(items) => Payload::UrlList(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => Ok(s.clone()),
                            _ => Err(ManifestError::WrongType {
                                key: "payload",
                                expected: "an array of strings for type URL_LIST",
                            }),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(ManifestError::WrongType {
                        key: "payload",
                        expected: "an array of strings for type URL_LIST",
                    });
                }
            },
            "FILE" => match raw_payload {
                Value::String(s) => Payload::File(s.clone()),
                _ => {
                    return Err(ManifestError::WrongType {
                        key: "payload",
                        expected: "a URL string for type FILE",
                    });
                }
            },
            "JSON" => match raw_payload {
                Value::Object(o) => Payload::Json(o.clone()),
                _ => {
                    return Err(ManifestError::WrongType {
                        key: "payload",
                        expected: "an object for type JSON",
                    });
                }
            },
            other => return Err(ManifestError::UnknownType(other.to_string())),
        };
        let attempt = match obj.get("attempt") {
            None | Some(Value::Null) => FIRST_ATTEMPT,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|&n| n >= 1 && n <= u64::from(u32::MAX))
                .ok_or(ManifestError::BadAttempt)? as u32,
            Some(_) => return Err(ManifestError::BadAttempt),
        };
        // A marker of another form is not this operator's: kept as text, never an error (a
        // device must be able to read any value the operator or a third party wrote).
        let rollout = match obj.get("rollout") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Manifest {
            version,
            name,
            description,
            payload,
            attempt,
            rollout,
        })
    }

    /// Whether a stored `config_otau` value is this manifest, compared as JSON (so a device that
    /// re-serialises the value, or reorders keys, still matches; exosite-platform.md §1.4).
    pub fn matches(&self, stored: &str) -> bool {
        Manifest::parse(stored).is_ok_and(|m| &m == self)
    }
}

/// Whether two strings hold the same JSON value (false when either is not JSON).
pub fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::url_list(
            "1.0.2",
            "Firmware update",
            "firmware package updated",
            vec![
                "firmware_updatev102.txt".into(),
                "https://mycontentserver.com/file1".into(),
            ],
        )
    }

    /// Found by the `manifest` fuzz target: with serde_json's default float parsing,
    /// `1.52222222222222222` read, written and read again came back one unit in the last
    /// place apart, so a device echoing a JSON manifest in another key order no longer matched.
    #[test]
    fn a_json_payload_with_long_floats_matches_after_a_round_trip() {
        let text = r#"{"version":"0","name":"cfg","type":"JSON","payload":{"e&b":[true,null,1.52222222222222222],"c":{"d":"e"}}}"#;
        let m = Manifest::parse(text).expect("manifest");
        let again = Manifest::parse(&m.to_json()).expect("its own JSON");
        assert_eq!(again, m);
        let reordered = r#"{"payload":{"c":{"d":"e"},"e&b":[true,null,1.5222222222222221]},"type":"JSON","name":"cfg","version":"0"}"#;
        assert!(m.matches(reordered));
    }

    #[test]
    fn serialises_exactly_in_contract_order() {
        assert_eq!(
            sample().to_json(),
            r#"{"version":"1.0.2","name":"Firmware update","description":"firmware package updated","type":"URL_LIST","payload":["firmware_updatev102.txt","https://mycontentserver.com/file1"]}"#
        );
    }

    #[test]
    fn empty_description_is_left_out_and_attempt_follows_payload() {
        let m = Manifest::url_list("2", "n", "", vec!["a.bin".into()]).with_attempt(3);
        assert_eq!(
            m.to_json(),
            r#"{"version":"2","name":"n","type":"URL_LIST","payload":["a.bin"],"attempt":3}"#
        );
        assert!(!m.with_attempt(1).to_json().contains("attempt"));
    }

    #[test]
    fn round_trips_and_accepts_other_key_orders_and_unknown_keys() {
        let m = sample().with_attempt(2);
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        let reordered = r#"{"payload":["x"],"type":"URL_LIST","extra":true,"name":"n","version":"v","description":""}"#;
        let p = Manifest::parse(reordered).unwrap();
        assert_eq!(p.version, "v");
        assert_eq!(p.attempt, 1);
        assert_eq!(p.description, "");
    }

    #[test]
    fn matches_compares_as_json_not_bytes() {
        let m = sample();
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&m.to_json()).unwrap())
                .unwrap();
        assert!(m.matches(&pretty));
        assert!(!m.with_attempt(2).matches(&pretty));
        assert!(!m.matches("ACK"));
        assert!(same_json(r#"{"a":1,"b":2}"#, r#"{ "b":2, "a":1 }"#));
        assert!(!same_json("ACK", "ACK"));
    }

    #[test]
    fn the_rollout_marker_is_written_last_read_back_and_left_out_of_equality() {
        let m = Manifest::url_list("2", "n", "", vec!["a.bin".into()]);
        let marked = m.with_attempt(2).with_rollout(Some("0123456789abcdef"));
        assert_eq!(
            marked.to_json(),
            r#"{"version":"2","name":"n","type":"URL_LIST","payload":["a.bin"],"attempt":2,"rollout":"0123456789abcdef"}"#
        );
        let read = Manifest::parse(&marked.to_json()).unwrap();
        assert!(read.marked_by("0123456789abcdef"));
        assert!(!read.marked_by("fedcba9876543210"));
        // Unmarked, marked by another Rollout, or marked by this one: the same manifest.
        assert_eq!(read, m.with_attempt(2));
        assert!(m.with_attempt(2).matches(&marked.to_json()));
        assert!(marked.matches(&m.with_attempt(2).to_json()));
        let other = m.with_rollout(Some("fedcba9876543210"));
        assert!(m.matches(&other.to_json()));
        assert!(!m.with_attempt(2).matches(&other.to_json()));
        // A marker that is not a string is no marker, and no error.
        let odd = Manifest::parse(
            r#"{"version":"2","name":"n","type":"URL_LIST","payload":["a.bin"],"rollout":7}"#,
        )
        .unwrap();
        assert_eq!((odd.rollout.clone(), odd == m), (None, true));
    }

    #[test]
    fn other_payload_types_parse() {
        let f = Manifest::parse(
            r#"{"version":"1","name":"n","type":"FILE","payload":"https://h/x.exe"}"#,
        )
        .unwrap();
        assert_eq!(
            f.payload.items(),
            vec![PayloadItem::Link("https://h/x.exe")]
        );
        let j = Manifest::parse(r#"{"version":"1","name":"n","type":"JSON","payload":{"k":1}}"#)
            .unwrap();
        assert!(j.payload.items().is_empty());
        assert!(j.to_json().contains(r#""type":"JSON","payload":{"k":1}"#));
    }

    #[test]
    fn malformed_manifests_say_what_is_wrong() {
        let cases: &[(&str, ManifestError)] = &[
            ("ACK", ManifestError::NotJson(String::new())),
            ("[1]", ManifestError::NotObject("an array")),
            (
                r#"{"name":"n","type":"URL_LIST","payload":[]}"#,
                ManifestError::MissingKey("version"),
            ),
            (
                r#"{"version":1,"name":"n","type":"URL_LIST","payload":[]}"#,
                ManifestError::WrongType {
                    key: "version",
                    expected: "a string",
                },
            ),
            (
                r#"{"version":"1","name":"n","type":"ZIP","payload":[]}"#,
                ManifestError::UnknownType("ZIP".into()),
            ),
            (
                r#"{"version":"1","name":"n","type":"URL_LIST"}"#,
                ManifestError::MissingKey("payload"),
            ),
            (
                r#"{"version":"1","name":"n","type":"URL_LIST","payload":[1]}"#,
                ManifestError::WrongType {
                    key: "payload",
                    expected: "an array of strings for type URL_LIST",
                },
            ),
            (
                r#"{"version":"1","name":"n","type":"URL_LIST","payload":[],"attempt":0}"#,
                ManifestError::BadAttempt,
            ),
            (
                r#"{"version":"1","name":"n","type":"URL_LIST","payload":[],"attempt":"2"}"#,
                ManifestError::BadAttempt,
            ),
        ];
        for (text, want) in cases {
            let got = Manifest::parse(text).unwrap_err();
            match (want, &got) {
                (ManifestError::NotJson(_), ManifestError::NotJson(msg)) => {
                    assert!(!msg.is_empty())
                }
                _ => assert_eq!(&got, want, "input {text}"),
            }
            assert!(!got.to_string().is_empty());
        }
    }

    #[test]
    fn payload_items_are_classified_by_host() {
        let p = Payload::UrlList(vec![
            "firmware_updatev102.txt".into(),
            "https://mycontentserver.com/file1".into(),
            "dir/with spaces.bin".into(),
            "file:///etc/passwd".into(),
        ]);
        assert_eq!(
            p.items(),
            vec![
                PayloadItem::ContentId("firmware_updatev102.txt"),
                PayloadItem::Link("https://mycontentserver.com/file1"),
                PayloadItem::ContentId("dir/with spaces.bin"),
                PayloadItem::ContentId("file:///etc/passwd"),
            ]
        );
    }

    #[test]
    fn oversized_manifest_is_refused() {
        let m = Manifest::url_list("1", "n", "x".repeat(MAX_MANIFEST_BYTES), vec![]);
        assert!(matches!(
            m.to_json_checked(),
            Err(ManifestError::TooLarge(_))
        ));
        assert!(sample().to_json_checked().is_ok());
        // A manifest that fits only without the attempt and marker a Rollout adds is refused
        // by its widest written form.
        let bare = Manifest::url_list("1", "n", "", vec![]);
        // `,"description":""` takes 17 bytes: 5 bytes short of the limit.
        let room = MAX_MANIFEST_BYTES - bare.to_json().len();
        let tight = Manifest::url_list("1", "n", "x".repeat(room - 22), vec![]);
        assert!(tight.to_json_checked().is_ok());
        assert!(matches!(
            tight.widest_written().to_json_checked(),
            Err(ManifestError::TooLarge(_))
        ));
    }
}
