//! The CRD API: `IoTConnector`, `SoftwarePackage` and `Rollout` (group `otau.dev`, version `v1alpha1`).
