//! The `deploy` test binary: the Helm chart, the rendered manifests and the kustomize base
//! checked with the real tools (helm, kubectl, the local kube-apiserver), and the chart's RBAC
//! proven least-privilege by the apiserver's audit log of an end-to-end rollout.
//! Other packaging checks (Argo CD, image, Prometheus) live here as modules too, so the whole
//! packaging suite links the library once.

#[path = "../support/mod.rs"]
mod support;

// The end-to-end harness (emulator with a fleet, operator process) for the Prometheus and RBAC
// runs; each uses a subset of it.
#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;

mod argocd;
mod chart;
mod gitops;
mod image;
mod murano;
mod prometheus;
mod rbac;
