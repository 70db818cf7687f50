//! The `otau_in` status report (exosite-platform.md §2.4) and its statuses (§2.5).

use std::fmt;

use serde_json::Value;

/// One `otau_in` status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The version the report is about.
    pub version: String,
    /// The status.
    pub status: Status,
    /// Free-text progress or error message; empty when absent.
    pub message: String,
}

/// The fifteen documented statuses, plus any other string a device sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    /// Begin processing a new OTAU.
    Init,
    /// Start of the OTAU tests.
    Test,
    /// Test progress.
    TestStep,
    /// The OTAU cannot be processed (failure).
    TestError,
    /// Tests passed; ready to download.
    TestSuccess,
    /// Start of the download.
    Download,
    /// Download progress.
    DownloadStep,
    /// Unable to download the update (failure).
    DownloadError,
    /// Download complete; ready to install.
    DownloadSuccess,
    /// Start of the install.
    Install,
    /// Install progress.
    InstallStep,
    /// Intentionally aborted, allowed at any time.
    InstallAborted,
    /// The installer exited with an unexpected code (failure).
    InstallError,
    /// Installation complete (not final: success is `INSTALLED_VERSION`).
    InstallSuccess,
    /// The version the device runs now; sent after an update and at every boot.
    InstalledVersion,
    /// A status the schema does not define; counted as in progress, never rejected.
    Unknown(String),
}

/// How a status counts toward a rollout, before the version is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// Still working (includes `INSTALL_SUCCESS` and unknown statuses not ending in `_ERROR`).
    InProgress,
    /// A `*_ERROR` status, documented or not.
    Failed,
    /// `INSTALL_ABORTED`.
    Aborted,
    /// `INSTALLED_VERSION`: success when the version is the target, else the current version.
    Installed,
}

const KNOWN: [(&str, Status); 15] = [
    ("INIT", Status::Init),
    ("TEST", Status::Test),
    ("TEST_STEP", Status::TestStep),
    ("TEST_ERROR", Status::TestError),
    ("TEST_SUCCESS", Status::TestSuccess),
    ("DOWNLOAD", Status::Download),
    ("DOWNLOAD_STEP", Status::DownloadStep),
    ("DOWNLOAD_ERROR", Status::DownloadError),
    ("DOWNLOAD_SUCCESS", Status::DownloadSuccess),
    ("INSTALL", Status::Install),
    ("INSTALL_STEP", Status::InstallStep),
    ("INSTALL_ABORTED", Status::InstallAborted),
    ("INSTALL_ERROR", Status::InstallError),
    ("INSTALL_SUCCESS", Status::InstallSuccess),
    ("INSTALLED_VERSION", Status::InstalledVersion),
];

impl Status {
    /// Every documented status, in schema order.
    pub fn all_known() -> impl Iterator<Item = Status> {
        KNOWN.iter().map(|(_, s)| s.clone())
    }

    /// Parses a status string; anything undocumented becomes [`Status::Unknown`].
    pub fn parse(s: &str) -> Status {
        KNOWN
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, st)| st.clone())
            .unwrap_or_else(|| Status::Unknown(s.to_string()))
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Unknown(s) => s,
            known => KNOWN
                .iter()
                .find(|(_, st)| st == known)
                .map(|(name, _)| *name)
                .unwrap_or(""),
        }
    }

    /// The class of exosite-platform.md §2.5: every status ending in `_ERROR`, documented or
    /// not, is a failure.
    pub fn class(&self) -> StatusClass {
        match self {
            Status::TestError | Status::DownloadError | Status::InstallError => StatusClass::Failed,
            Status::InstallAborted => StatusClass::Aborted,
            Status::InstalledVersion => StatusClass::Installed,
            Status::Unknown(s) if is_error_name(s) => StatusClass::Failed,
            _ => StatusClass::InProgress,
        }
    }

    /// Whether the schema documents this status.
    pub fn is_known(&self) -> bool {
        !matches!(self, Status::Unknown(_))
    }
}

/// Whether an undocumented status names a failure: it ends in `_ERROR` (the schema's three
/// failures do, exosite-platform.md §2.5) after something.
fn is_error_name(status: &str) -> bool {
    status.len() > "_ERROR".len() && status.ends_with("_ERROR")
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an `otau_in` value is not a usable report ("malformed" in the contract).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Empty value.
    #[error("otau_in is empty")]
    Empty,
    /// Not JSON text.
    #[error("otau_in is not valid JSON: {0}")]
    NotJson(String),
    /// JSON but not an object.
    #[error("otau_in must be a JSON object")]
    NotObject,
    /// A required key is missing.
    #[error("otau_in has no `{0}` key")]
    MissingKey(&'static str),
    /// A key is not a string.
    #[error("otau_in key `{0}` must be a string")]
    NotString(&'static str),
}

impl Report {
    /// A report value as a device writes it (compact JSON).
    pub fn new(version: impl Into<String>, status: Status, message: impl Into<String>) -> Self {
        Report {
            version: version.into(),
            status,
            message: message.into(),
        }
    }

    /// Parses an `otau_in` value. Never panics; says what is wrong.
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        if text.trim().is_empty() {
            return Err(ReportError::Empty);
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| ReportError::NotJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ReportError::NotObject);
        };
        let field = |key: &'static str| match obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            None => Err(ReportError::MissingKey(key)),
            Some(_) => Err(ReportError::NotString(key)),
        };
        let version = field("version")?;
        let status = Status::parse(&field("status")?);
        let message = match obj.get("message") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        Ok(Report {
            version,
            status,
            message,
        })
    }

    /// The compact JSON value a device writes to `otau_in`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "version": self.version,
            "status": self.status.as_str(),
            "message": self.message,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_has_its_class() {
        let expected = [
            ("INIT", StatusClass::InProgress),
            ("TEST", StatusClass::InProgress),
            ("TEST_STEP", StatusClass::InProgress),
            ("TEST_ERROR", StatusClass::Failed),
            ("TEST_SUCCESS", StatusClass::InProgress),
            ("DOWNLOAD", StatusClass::InProgress),
            ("DOWNLOAD_STEP", StatusClass::InProgress),
            ("DOWNLOAD_ERROR", StatusClass::Failed),
            ("DOWNLOAD_SUCCESS", StatusClass::InProgress),
            ("INSTALL", StatusClass::InProgress),
            ("INSTALL_STEP", StatusClass::InProgress),
            ("INSTALL_ABORTED", StatusClass::Aborted),
            ("INSTALL_ERROR", StatusClass::Failed),
            ("INSTALL_SUCCESS", StatusClass::InProgress),
            ("INSTALLED_VERSION", StatusClass::Installed),
        ];
        assert_eq!(Status::all_known().count(), 15);
        for (name, class) in expected {
            let s = Status::parse(name);
            assert!(s.is_known(), "{name}");
            assert_eq!(s.as_str(), name);
            assert_eq!(s.class(), class, "{name}");
        }
    }

    #[test]
    fn unknown_statuses_are_kept_and_in_progress() {
        for name in ["REBOOTING", "INSTALL_FAILED", "init", ""] {
            let s = Status::parse(name);
            assert_eq!(s, Status::Unknown(name.to_string()));
            assert_eq!(s.as_str(), name);
            assert_eq!(s.class(), StatusClass::InProgress);
        }
    }

    #[test]
    fn reports_round_trip() {
        let r = Report::new("1.2.4", Status::TestError, "Not enough memory");
        assert_eq!(Report::parse(&r.to_json()).unwrap(), r);
        let doc = r#"{"version": "2.0.5-stable", "status": "INSTALLED_VERSION", "message": ""}"#;
        let p = Report::parse(doc).unwrap();
        assert_eq!(p.status, Status::InstalledVersion);
        let no_message = Report::parse(r#"{"version":"1","status":"INIT"}"#).unwrap();
        assert_eq!(no_message.message, "");
    }

    #[test]
    fn malformed_reports_say_what_is_wrong_and_never_panic() {
        let cases: &[(&str, ReportError)] = &[
            ("", ReportError::Empty),
            ("   ", ReportError::Empty),
            ("[]", ReportError::NotObject),
            ("\"INIT\"", ReportError::NotObject),
            (r#"{"status":"INIT"}"#, ReportError::MissingKey("version")),
            (r#"{"version":"1"}"#, ReportError::MissingKey("status")),
            (
                r#"{"version":1,"status":"INIT"}"#,
                ReportError::NotString("version"),
            ),
            (
                r#"{"version":"1","status":null}"#,
                ReportError::NotString("status"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&Report::parse(text).unwrap_err(), want, "input {text:?}");
        }
        for junk in ["ACK", "{", "{\"version\":\"1\",", "\u{0}", "nul\u{ffff}"] {
            let e = Report::parse(junk).unwrap_err();
            assert!(matches!(e, ReportError::NotJson(_)), "{junk:?} gave {e:?}");
            assert!(e.to_string().starts_with("otau_in is not valid JSON"));
        }
    }
}
