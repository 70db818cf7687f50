//! The `cluster` integration-test binary: everything that needs the real local Kubernetes
//! control plane (etcd + kube-apiserver from `hack/tools.sh`). One control plane serves the
//! whole binary; each test gets its own namespace. Add test modules with `mod x;` below.

#[path = "../support/mod.rs"]
mod support;

mod connector;
mod control_plane;
mod crd_skew;
mod crds;
mod events;
mod listeners;
mod operator;
mod outbound;
mod package;
mod upgrade;
