//! The `plugin` test binary: `kubectl otau` against the real local control plane (etcd +
//! kube-apiserver from `hack/tools.sh`), the operator binary as a process and the emulator
//! with a simulated fleet in this process (the e2e harness, shared by `#[path]`). Each test
//! has its own namespace, emulator and operator.

#[path = "../support/mod.rs"]
mod support;

// The e2e harness, shared as is; this binary uses part of it.
#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;

mod cli;

mod approve;
mod control;
mod devices;
mod hostile;
