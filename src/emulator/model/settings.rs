//! Connector settings as `GET /device2` returns them (exosite-platform.md §5.2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The connector settings object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorSettings {
    /// Device API host, `<cid>.m2.exosite.io`.
    pub fqdn: String,
    /// Device protocol.
    pub protocol: ProtocolSettings,
    /// How identities are formed.
    pub identity_format: IdentityFormat,
    /// Provisioning rules.
    pub provisioning: ProvisioningSettings,
    /// The resources (aliases) every device of the connector has.
    pub resources: BTreeMap<String, ResourceDef>,
}

/// `protocol` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolSettings {
    /// `onep:v1/http` or `murano:v1/mqtt`.
    pub name: String,
    /// Plain HTTP development mode.
    pub devmode: bool,
    /// Port as a string (`"443"`).
    pub port: String,
}

/// `identity_format` settings (stored and returned; not enforced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFormat {
    /// Format type, for example `opaque`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Identity prefix.
    pub prefix: String,
    /// Casing and length options.
    pub options: IdentityFormatOptions,
}

/// `identity_format.options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFormatOptions {
    /// `mixed`, `lower` or `upper`.
    pub casing: String,
    /// Fixed length, 0 for any.
    pub length: u32,
}

/// `provisioning` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningSettings {
    /// Whether devices may activate.
    pub enabled: bool,
    /// Default auth type of new identities (`token`, `password`, ...).
    pub auth_type: String,
    /// Stored and returned; no effect in the emulator.
    pub generate_identity: bool,
    /// Stored and returned; no effect in the emulator.
    pub presenter_identity: bool,
    /// Stored and returned; no effect in the emulator.
    pub ip_whitelisting: IpWhitelisting,
}

/// `provisioning.ip_whitelisting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpWhitelisting {
    /// On or off.
    pub enabled: bool,
    /// Allowed addresses.
    pub allowed: Vec<String>,
}

/// One resource definition (exosite-platform.md §1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDef {
    /// `string`, `number` or `boolean`.
    pub format: String,
    /// Unit label.
    #[serde(default)]
    pub unit: String,
    /// Whether the cloud may write it.
    #[serde(default)]
    pub settable: bool,
    /// Allowed values or ranges (stored, not enforced).
    #[serde(default)]
    pub allowed: Vec<serde_json::Value>,
    /// Initial set value (stored, not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<serde_json::Value>,
    /// Stored and returned, no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<bool>,
}

impl ResourceDef {
    /// A string resource.
    pub fn string(settable: bool) -> Self {
        ResourceDef {
            format: "string".into(),
            unit: String::new(),
            settable,
            allowed: Vec::new(),
            initial: None,
            sync: None,
        }
    }
}

impl ConnectorSettings {
    /// The defaults of a new connector: HTTP, token provisioning, resources `config_otau`
    /// (settable string) and `otau_in` (non-settable string).
    pub fn defaults(cid: &str) -> Self {
        ConnectorSettings {
            fqdn: format!("{cid}.m2.exosite.io"),
            protocol: ProtocolSettings {
                name: "onep:v1/http".into(),
                devmode: false,
                port: "443".into(),
            },
            identity_format: IdentityFormat {
                kind: "opaque".into(),
                prefix: String::new(),
                options: IdentityFormatOptions {
                    casing: "mixed".into(),
                    length: 0,
                },
            },
            provisioning: ProvisioningSettings {
                enabled: true,
                auth_type: "token".into(),
                generate_identity: false,
                presenter_identity: false,
                ip_whitelisting: IpWhitelisting {
                    enabled: false,
                    allowed: Vec::new(),
                },
            },
            resources: BTreeMap::from([
                (
                    crate::otau::CONFIG_OTAU.to_string(),
                    ResourceDef::string(true),
                ),
                (crate::otau::OTAU_IN.to_string(), ResourceDef::string(false)),
            ]),
        }
    }

    /// These settings with a `PATCH /device2` body applied: objects merge key by key, except
    /// `resources`, which replaces the whole resource list (as the CLI sends it).
    pub fn patched(&self, patch: &serde_json::Value) -> Result<Self, ModelError> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(ModelError::Invalid(
                "the settings body must be a JSON object".into(),
            ));
        };
        let mut current = serde_json::to_value(self)
            .map_err(|e| ModelError::Invalid(format!("settings: {e}")))?;
        for (key, value) in patch {
            if key == "resources" {
                current[key] = value.clone();
            } else {
                merge(&mut current[key], value);
            }
        }
        serde_json::from_value(current)
            .map_err(|e| ModelError::Invalid(format!("invalid settings: {e}")))
    }
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_have_the_otau_resources() {
        let s = ConnectorSettings::defaults("abc");
        assert!(s.resources["config_otau"].settable);
        assert!(!s.resources["otau_in"].settable);
        assert_eq!(s.fqdn, "abc.m2.exosite.io");
    }

    #[test]
    fn patch_merges_objects_and_replaces_resources() {
        let s = ConnectorSettings::defaults("abc");
        let p = s
            .patched(&json!({"protocol": {"devmode": true},
                "resources": {"data_in": {"format": "string", "settable": false}}}))
            .unwrap();
        assert!(p.protocol.devmode);
        assert_eq!(p.protocol.port, "443");
        assert_eq!(p.resources.len(), 1);
        assert!(p.resources.contains_key("data_in"));
        let err = s
            .patched(&json!({"protocol": {"devmode": "yes"}}))
            .unwrap_err();
        assert!(err.to_string().contains("invalid settings"), "{err}");
    }
}
