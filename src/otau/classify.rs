//! Classification of an `otau_in` report against a rollout's target version
//! (exosite-platform.md §2.5).

use super::report::{Report, ReportError, StatusClass};

/// What one device's latest `otau_in` value says about a rollout to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// No report at all.
    NoReport,
    /// The value is not a report (not JSON, or lacks `version`/`status`): counted as malformed.
    Malformed(ReportError),
    /// `INSTALLED_VERSION` with the target version.
    Succeeded,
    /// A `*_ERROR` status for the target version, documented or not (any status ending in
    /// `_ERROR` is a failure).
    Failed,
    /// `INSTALL_ABORTED` for the target version.
    Aborted,
    /// Any other status for the target version; `known` is false for undocumented statuses
    /// (none of which ends in `_ERROR`).
    InProgress {
        /// Whether the status is one of the fifteen documented ones.
        known: bool,
    },
    /// `INSTALLED_VERSION` with another version: the device's current version.
    CurrentVersion(String),
    /// A non-`INSTALLED_VERSION` report about another version: ignored.
    OtherVersion,
}

/// Classifies a raw `otau_in` value (`None` when the device never wrote one).
pub fn classify(raw: Option<&str>, target: &str) -> Classification {
    let Some(raw) = raw else {
        return Classification::NoReport;
    };
    let report = match Report::parse(raw) {
        Ok(r) => r,
        Err(e) => return Classification::Malformed(e),
    };
    let on_target = report.version == target;
    match (report.status.class(), on_target) {
        (StatusClass::Installed, true) => Classification::Succeeded,
        (StatusClass::Installed, false) => Classification::CurrentVersion(report.version),
        (_, false) => Classification::OtherVersion,
        (StatusClass::Failed, true) => Classification::Failed,
        (StatusClass::Aborted, true) => Classification::Aborted,
        (StatusClass::InProgress, true) => Classification::InProgress {
            known: report.status.is_known(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otau::{Report, Status};

    fn c(version: &str, status: &str) -> Classification {
        let raw = Report::new(version, Status::parse(status), "").to_json();
        classify(Some(&raw), "2.0")
    }

    #[test]
    fn success_is_installed_version_of_the_target_only() {
        assert_eq!(c("2.0", "INSTALLED_VERSION"), Classification::Succeeded);
        assert_eq!(
            c("2.0", "INSTALL_SUCCESS"),
            Classification::InProgress { known: true }
        );
        assert_eq!(
            c("1.0", "INSTALLED_VERSION"),
            Classification::CurrentVersion("1.0".into())
        );
    }

    #[test]
    fn failures_aborts_and_progress_for_the_target() {
        for s in ["TEST_ERROR", "DOWNLOAD_ERROR", "INSTALL_ERROR"] {
            assert_eq!(c("2.0", s), Classification::Failed, "{s}");
        }
        assert_eq!(c("2.0", "INSTALL_ABORTED"), Classification::Aborted);
        for s in [
            "INIT",
            "TEST",
            "TEST_STEP",
            "TEST_SUCCESS",
            "DOWNLOAD",
            "DOWNLOAD_STEP",
            "DOWNLOAD_SUCCESS",
            "INSTALL",
            "INSTALL_STEP",
            "INSTALL_SUCCESS",
        ] {
            assert_eq!(
                c("2.0", s),
                Classification::InProgress { known: true },
                "{s}"
            );
        }
        assert_eq!(
            c("2.0", "WARMING_UP"),
            Classification::InProgress { known: false }
        );
    }

    #[test]
    fn undocumented_statuses_ending_in_error_are_failures() {
        for s in ["VERIFY_ERROR", "FLASH_ERROR", "X_ERROR"] {
            assert_eq!(c("2.0", s), Classification::Failed, "{s}");
        }
        // Only the suffix counts, and it needs a name before it.
        for s in [
            "_ERROR",
            "ERROR",
            "ERRORS",
            "VERIFY_ERROR_RETRY",
            "verify_error",
        ] {
            assert_eq!(
                c("2.0", s),
                Classification::InProgress { known: false },
                "{s}"
            );
        }
        assert_eq!(c("1.9", "VERIFY_ERROR"), Classification::OtherVersion);
    }

    #[test]
    fn reports_about_other_versions_are_ignored() {
        for s in ["TEST_ERROR", "INIT", "INSTALL_ABORTED", "WHATEVER"] {
            assert_eq!(c("1.9", s), Classification::OtherVersion, "{s}");
        }
    }

    #[test]
    fn missing_and_malformed_reports() {
        assert_eq!(classify(None, "2.0"), Classification::NoReport);
        assert!(matches!(
            classify(Some("ACK"), "2.0"),
            Classification::Malformed(_)
        ));
        assert!(matches!(
            classify(Some(r#"{"version":"2.0"}"#), "2.0"),
            Classification::Malformed(ReportError::MissingKey("status"))
        ));
    }
}
