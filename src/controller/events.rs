//! Kubernetes Events through the one shared [`Recorder`] (docs/architecture.md §9.5). Notes are
//! for humans, capped below 1 kB, and never hold a Secret value.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Most bytes of an event note (the API allows 1 kB).
pub const MAX_NOTE_BYTES: usize = 1000;

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
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::warn!(
            reason,
            object = reference.name.as_deref().unwrap_or(""),
            error = %error,
            "could not publish an event"
        );
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_capped_on_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(600);
        let cut = truncate(&long, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
    }
}
