//! Status writes (docs/architecture.md §9.2): server-side apply of the whole status with the one
//! field manager, forced, under a timeout; and the time stamps conditions carry.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Error;

/// The field manager of every write the operator makes. Never rename it.
pub const FIELD_MANAGER: &str = "otau-operator";

/// How long one status patch may take.
pub const PATCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Now, in whole seconds (what the apiserver stores in a `metav1.Time`).
pub fn now() -> Time {
    let seconds = Timestamp::now().as_second();
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// `now + after`, in whole seconds.
pub fn after(after: Duration) -> Time {
    let seconds = Timestamp::now()
        .as_second()
        .saturating_add(i64::try_from(after.as_secs()).unwrap_or(i64::MAX / 2));
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Applies `status` as the whole status of `name`, as `apiVersion`/`kind`.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    status: &S,
) -> Result<(), Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let body = Patch::Apply(serde_json::json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": kind,
        "status": status,
    }));
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match tokio::time::timeout(PATCH_TIMEOUT, api.patch_status(name, &params, &body)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(Error::Kube {
            op: "patch status",
            source,
        }),
        Err(_) => Err(Error::KubeTimeout {
            op: "patch status",
            after: PATCH_TIMEOUT,
        }),
    }
}

/// A duration for humans: `2d 3h`, `47h 59m`, `5m 3s`, `12s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) =
        (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(172_800)), "2d 0h");
        assert_eq!(human_duration(Duration::from_secs(172_799)), "1d 23h");
        assert_eq!(human_duration(Duration::from_secs(3_700)), "1h 1m");
        assert_eq!(human_duration(Duration::from_secs(303)), "5m 3s");
        assert_eq!(human_duration(Duration::from_secs(7)), "7s");
    }

    #[test]
    fn times_are_whole_seconds() {
        let t = now();
        assert_eq!(t.0.subsec_nanosecond(), 0);
        assert!(after(Duration::from_secs(60)).0 > t.0);
    }
}
