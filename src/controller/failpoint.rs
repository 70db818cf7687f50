//! Crash points for the end-to-end crash tests (docs/testing.md, "Crash tests").
//!
//! Compiled in always and inert unless the environment variable [`ENV`] is set when the
//! operator starts. `OTAU_FAILPOINT=after-write:<n>` makes the task that performs the n-th
//! successful `config_otau` write of the process log [`MARKER`] and then block forever, so
//! the write has reached the platform but nothing after it (the Rollout's status patch) ever
//! happens. A test waits for the marker and kills the process with SIGKILL.
//!
//! The variable is read once per process; each later call costs one atomic load (and one
//! atomic increment while a failpoint is armed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a failpoint.
pub const ENV: &str = "OTAU_FAILPOINT";

/// The log message of a failpoint that was reached.
pub const MARKER: &str = "failpoint reached: this task now blocks forever";

/// A failpoint that can be armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// Block the task right after the n-th successful `config_otau` write (counted from 1
    /// over the whole process).
    AfterWrite(u64),
}

/// Parses the value of [`ENV`], e.g. `after-write:3`.
pub fn parse(value: &str) -> Result<Failpoint, String> {
    let value = value.trim();
    let Some((name, count)) = value.split_once(':') else {
        return Err(format!(
            "{ENV}={value:?} is not understood: expected after-write:<n>"
        ));
    };
    match name {
        "after-write" => match count.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Failpoint::AfterWrite(n)),
            _ => Err(format!(
                "{ENV}={value:?}: the write count must be a whole number of at least 1"
            )),
        },
        other => Err(format!(
            "{ENV}={value:?}: unknown failpoint {other:?}; the only one is after-write:<n>"
        )),
    }
}

/// The failpoint armed for this process, read from the environment on first use.
fn armed() -> Option<Failpoint> {
    static ARMED: OnceLock<Option<Failpoint>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let value = std::env::var(ENV).ok()?;
        match parse(&value) {
            Ok(point) => {
                tracing::warn!(failpoint = %value, "a crash-test failpoint is armed");
                Some(point)
            }
            Err(message) => {
                tracing::error!(%message, "ignoring the failpoint setting");
                None
            }
        }
    })
}

static WRITES: AtomicU64 = AtomicU64::new(0);

/// Passes `value` through after a successful `config_otau` write; when `after-write:<n>` is
/// armed and this is the n-th write, logs [`MARKER`] and never returns.
pub async fn after_write<T>(value: T) -> T {
    if let Some(Failpoint::AfterWrite(n)) = armed()
        && WRITES.fetch_add(1, Ordering::SeqCst) + 1 == n
    {
        tracing::error!(failpoint = "after-write", write = n, "{MARKER}");
        std::future::pending::<()>().await;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_write_with_a_count_is_understood() {
        assert_eq!(parse("after-write:3"), Ok(Failpoint::AfterWrite(3)));
        assert_eq!(parse(" after-write:1 "), Ok(Failpoint::AfterWrite(1)));
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for bad in [
            "after-write",
            "after-write:0",
            "after-write:x",
            "before-write:2",
            "",
        ] {
            let message = parse(bad).expect_err(bad);
            assert!(message.contains(ENV), "{message}");
        }
    }
}
