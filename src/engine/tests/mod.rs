//! Scenario and property tests of the engine, driving [`super::reconcile`] against a tiny
//! fake fleet that applies each decision to the devices' platform state.

mod busy_foreign;
mod device_rules;
mod fleet;
mod properties;
mod reruns;
mod scenarios;
mod status_size;
mod upgrade;
