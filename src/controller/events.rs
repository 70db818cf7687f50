//! Kubernetes Events through the one shared [`Recorder`] (docs/architecture.md §9.5). Notes are
//! for humans, capped below 1 kB, never hold a Secret value, and show device and platform text
//! only made safe ([`safe_text`]: control and invisible characters escaped).
//!
//! An Event repeated with the same note within a few minutes becomes a series (one object with
//! a count), like kube's own recorder; unlike it, an Event whose note changed is a new object,
//! so `kubectl describe` and `kubectl get events` show the latest numbers (a second `AutoPaused`
//! reads "16 of 80", not the first one's "1 of 6").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use tokio::sync::Mutex;

use crate::otau::safe_text;

/// Most bytes of an event note (the API allows 1 kB).
pub const MAX_NOTE_BYTES: usize = 1000;

/// How long a repeat still counts into the series of the first occurrence.
const SERIES_WINDOW: Duration = Duration::from_secs(360);

/// Most series remembered (oldest forgotten first): bounds the memory at any number of
/// objects.
const MAX_SERIES: usize = 4096;

/// Who reports the Events.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// `reportingController`.
    pub controller: String,
    /// `reportingInstance`.
    pub instance: String,
}

/// What makes two Events the same series: everything but the time, the note included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    type_: &'static str,
    reason: String,
    action: String,
    note: String,
}

/// The Event object of a series and when it was last seen.
struct Series {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

/// Publishes Events (`events.k8s.io/v1`), folding identical repeats into series.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    series: Arc<Mutex<HashMap<SeriesKey, Series>>>,
}

impl Recorder {
    /// A recorder reporting as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Arc::default(),
        }
    }

    /// Publishes one Event: a repeat of the same note within the window patches the count of
    /// the existing object; anything else creates a new one.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let key = SeriesKey {
            regarding: (
                reference.namespace.clone(),
                reference.kind.clone(),
                reference.name.clone(),
                reference.uid.clone(),
            ),
            type_: type_name(type_),
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: note.to_owned(),
        };
        let now = Timestamp::now();
        let repeat = {
            let mut series = self.series.lock().await;
            series.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
            series.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = Instant::now();
                (s.namespace.clone(), s.name.clone(), s.count)
            })
        };
        if let Some((namespace, name, count)) = repeat {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = event_name(
            reference
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond(),
        );
        let event = K8sEvent {
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            note: Some(note.to_owned()),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone()),
            type_: Some(type_name(type_).to_owned()),
            ..K8sEvent::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        let mut series = self.series.lock().await;
        if series.len() >= MAX_SERIES
            && let Some(oldest) = series
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            series.remove(&oldest);
        }
        series.insert(
            key,
            Series {
                name,
                namespace,
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// The note an Event carries: `note` made safe to show (device and platform text may hold
/// escape sequences, bells, bidi overrides) and cut at [`MAX_NOTE_BYTES`].
pub fn note_text(note: &str) -> String {
    safe_text(note, MAX_NOTE_BYTES)
}

/// Publishes one event about `reference`; failures are logged, never returned (events are
/// for humans, not state).
pub async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let note = note_text(note);
    if let Err(error) = recorder
        .publish(reference, type_, reason, action, &note)
        .await
    {
        tracing::warn!(
            reason,
            object = reference.name.as_deref().unwrap_or(""),
            error = %error,
            "could not publish an event"
        );
    }
}

/// The name of an Event about `object` at `nanos` (ns since the epoch): `<object>.<hex>`, the
/// object's name shortened (and cut back to end on a letter or digit) when the whole would
/// pass the 253 characters of a Kubernetes name. The schema keeps new object names short
/// enough (`crate::api::names::MAX_NAME_LENGTH`); this keeps Events coming for objects stored
/// with longer names before that bound existed.
pub fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = crate::api::names::KUBERNETES_NAME_LIMIT.saturating_sub(suffix.len());
    let mut prefix = object;
    if prefix.len() > room {
        let mut end = room;
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        prefix = prefix[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    }
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_fit_a_kubernetes_name_whatever_the_object_name() {
        let nanos: i128 = 1_765_000_000_123_456_789;
        assert_eq!(event_name("fw", nanos), format!("fw.{nanos:x}"));
        // The longest name the schema allows keeps its whole name.
        let longest = "a".repeat(crate::api::names::MAX_NAME_LENGTH);
        let name = event_name(&longest, nanos);
        assert_eq!(name.len(), 253);
        assert!(name.starts_with(&longest));
        // A name stored before the bound is shortened, never past a letter or digit.
        let stored = format!("{}-x", "b".repeat(235));
        let name = event_name(&stored, nanos);
        assert!(name.len() <= 253, "{}", name.len());
        assert_eq!(name, format!("{}.{nanos:x}", "b".repeat(235)));
        let dotted = format!("{}.c.{}", "d".repeat(234), "e".repeat(16));
        assert_eq!(
            event_name(&dotted, nanos),
            format!("{}.c.{nanos:x}", "d".repeat(234))
        );
    }

    #[test]
    fn notes_are_capped_on_char_boundaries_and_show_no_control_character() {
        assert_eq!(note_text("short"), "short");
        let long = "é".repeat(600);
        let cut = note_text(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
        let hostile = note_text("write failed: \u{1b}]0;owned\u{7}\r\u{202e}gnp.exe");
        assert_eq!(
            hostile,
            "write failed: \\u{1b}]0;owned\\u{7}\\r\\u{202e}gnp.exe"
        );
    }
}
