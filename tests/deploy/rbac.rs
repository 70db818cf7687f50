//! The chart's RBAC against the apiserver's audit log of an end-to-end rollout.
