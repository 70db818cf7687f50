//! The `e2e` test binary: Rollouts end to end on the real local control plane (etcd +
//! kube-apiserver from `hack/tools.sh`), the emulator with a simulated fleet in this process,
//! and the operator binary as a separate process, driven with kubectl. One control plane
//! serves the binary; each test has its own namespace and its own emulator.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod canary;
mod complete;
mod conflict;
mod content;
mod control;
mod counting;
mod devices;
mod equivalence;
mod foreign;
mod leader;
mod listing;
mod mqtt_devices;
mod outage;
mod policies;
mod push;
mod push_checks;
mod readme;
mod restart;
mod upgrade;
