//! Events as people read them: a repeat of the same Event counts into one series, and an Event
//! whose note changed is a new object, so `kubectl describe` shows the latest numbers (a second
//! automatic pause must not read like the first).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use otau_operator::controller::metrics::Metrics;
use otau_operator::controller::{Context, Settings};

use crate::support::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_note_is_a_new_event_and_a_repeat_counts_into_its_series() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("events").await;
    let client = cp.client().await;
    let ctx = Context::new(
        client.clone(),
        Settings::default(),
        Metrics::new().expect("metrics"),
    );
    let reference = ObjectReference {
        api_version: Some("otau.dev/v1alpha1".into()),
        kind: Some("Rollout".into()),
        name: Some("fw".into()),
        namespace: Some(ns.clone()),
        uid: Some("9d1c0c6e-0000-4000-8000-000000000001".into()),
        ..ObjectReference::default()
    };
    let first = "wave 2: 1 of 6 finished devices failed (16.7%), over the threshold of 10%";
    let later = "waves 1-2: 16 of 80 finished devices failed (20.0%), over the threshold of 10%";
    for note in [first, first, later] {
        ctx.event(&reference, EventType::Warning, "AutoPaused", "Wave2", note)
            .await;
    }
    let events: Api<Event> = Api::namespaced(client, &ns);
    let mut listed: Vec<(String, i32)> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| (e.note.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![(first.to_owned(), 2), (later.to_owned(), 1)],
        "the repeat counts into the first Event's series; the new note is an Event of its own"
    );
}
