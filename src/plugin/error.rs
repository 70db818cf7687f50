//! Errors of the plugin, each naming the object and what to do about it.

/// What went wrong, in words a person acts on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The kubeconfig could not be read or has no usable context.
    #[error("cannot load the kubeconfig: {0} (check --kubeconfig, --context or $KUBECONFIG)")]
    Kubeconfig(String),
    /// The otau.dev CRDs are not in the cluster.
    #[error(
        "the cluster has no {resource}.otau.dev API: the otau-operator CRDs are not installed; \
         install crds/ with `kubectl apply -f crds/`"
    )]
    CrdMissing {
        /// The plural resource asked for, e.g. `rollouts`.
        resource: String,
    },
    /// The named object does not exist.
    #[error("{kind} {namespace}/{name} not found{hint}")]
    NotFound {
        /// Kind, e.g. `Rollout`.
        kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What to do, starting with `; `.
        hint: String,
    },
    /// The user's kubeconfig rights do not allow the request.
    #[error("{action}: forbidden ({message}); {hint}")]
    Forbidden {
        /// What was attempted, naming the object.
        action: String,
        /// The apiserver's words.
        message: String,
        /// What to do.
        hint: String,
    },
    /// Any other apiserver or connection failure.
    #[error("{action}: {message}")]
    Kube {
        /// What was attempted, naming the object.
        action: String,
        /// The cause.
        message: String,
    },
    /// The request cannot be carried out as asked (e.g. nothing to approve).
    #[error("{0}")]
    Refused(String),
    /// Reading devices from the platform failed.
    #[error("{0}")]
    Platform(String),
    /// Writing output failed.
    #[error("writing the output: {0}")]
    Output(String),
}

/// The object a Kubernetes request was about, to word its errors.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Kind, e.g. `Rollout`.
    pub kind: &'a str,
    /// Plural resource, e.g. `rollouts` (for the missing-CRD message).
    pub resource: &'a str,
    /// Whether the kind is one of the otau.dev CRDs.
    pub otau: bool,
    /// Namespace (`None` for every namespace).
    pub namespace: Option<&'a str>,
    /// Name (`None` for a list).
    pub name: Option<&'a str>,
    /// Verb, for the rights hint: `get`, `list`, `watch`, `patch`.
    pub verb: &'a str,
}

impl<'a> Subject<'a> {
    /// A list of one of the otau.dev kinds, in `namespace` (`None`: every namespace).
    pub fn otau_list(kind: &'a str, resource: &'a str, namespace: Option<&'a str>) -> Self {
        Subject {
            kind,
            resource,
            otau: true,
            namespace,
            name: None,
            verb: "list",
        }
    }

    fn describe(&self) -> String {
        let place = match (self.namespace, self.name) {
            (Some(ns), Some(name)) => format!("{} {ns}/{name}", self.kind),
            (Some(ns), None) => format!("{} in namespace {ns}", self.resource),
            (None, Some(name)) => format!("{} {name}", self.kind),
            (None, None) => format!("{} in every namespace", self.resource),
        };
        format!("{} {place}", self.verb)
    }

    /// Turns a kube error about this subject into a [`PluginError`].
    pub fn explain(&self, error: kube::Error) -> PluginError {
        let kube::Error::Api(status) = &error else {
            return PluginError::Kube {
                action: self.describe(),
                message: error.to_string(),
            };
        };
        match status.code {
            404 => {
                let about_object = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
                match self.name {
                    Some(name) if about_object || !self.otau => {
                        let namespace = self.namespace.unwrap_or("").to_owned();
                        let hint = if self.kind == "Rollout" {
                            format!(
                                "; list the rollouts with `kubectl otau list -n {namespace}` (or `-A` for every namespace)"
                            )
                        } else {
                            String::new()
                        };
                        PluginError::NotFound {
                            kind: self.kind.to_owned(),
                            namespace,
                            name: name.to_owned(),
                            hint,
                        }
                    }
                    _ if self.otau => PluginError::CrdMissing {
                        resource: self.resource.to_owned(),
                    },
                    _ => PluginError::Kube {
                        action: self.describe(),
                        message: status.message.clone(),
                    },
                }
            }
            401 => PluginError::Forbidden {
                action: self.describe(),
                message: status.message.clone(),
                hint: "the kubeconfig's credentials were not accepted; log in again or pick another --context".into(),
            },
            403 => PluginError::Forbidden {
                action: self.describe(),
                message: status.message.clone(),
                hint: format!(
                    "ask for `{}` on {}{} (see `kubectl auth can-i {} {}`)",
                    self.verb,
                    self.resource,
                    self.namespace
                        .map(|ns| format!(" in namespace {ns}"))
                        .unwrap_or_default(),
                    self.verb,
                    self.resource
                ),
            },
            _ => PluginError::Kube {
                action: self.describe(),
                message: if status.message.is_empty() {
                    error.to_string()
                } else {
                    status.message.clone()
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;

    fn rollout<'a>(name: Option<&'a str>) -> Subject<'a> {
        Subject {
            kind: "Rollout",
            resource: "rollouts",
            otau: true,
            namespace: Some("fleet"),
            name,
            verb: "get",
        }
    }

    #[test]
    fn a_missing_crd_says_to_install_crds() {
        // An unknown API path: 404 without details about an object.
        let error = kube::Error::Api(
            Status::failure("404 page not found", "NotFound")
                .with_code(404)
                .boxed(),
        );
        let text = rollout(Some("fw")).explain(error).to_string();
        assert!(text.contains("kubectl apply -f crds/"), "{text}");
        let error = kube::Error::Api(
            Status::failure(
                "the server could not find the requested resource",
                "NotFound",
            )
            .with_code(404)
            .boxed(),
        );
        let text = rollout(None).explain(error).to_string();
        assert!(text.contains("rollouts.otau.dev"), "{text}");
    }

    #[test]
    fn a_missing_rollout_is_named_with_a_hint() {
        let error = kube::Error::Api(
            Status::failure("rollouts.otau.dev \"fw\" not found", "NotFound")
                .with_code(404)
                .with_details(StatusDetails {
                    name: "fw".into(),
                    group: "otau.dev".into(),
                    kind: "rollouts".into(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: 0,
                })
                .boxed(),
        );
        let text = rollout(Some("fw")).explain(error).to_string();
        assert_eq!(
            text,
            "Rollout fleet/fw not found; list the rollouts with `kubectl otau list -n fleet` (or `-A` for every namespace)"
        );
    }

    #[test]
    fn forbidden_names_the_right_to_ask_for() {
        let error = kube::Error::Api(
            Status::failure(
                "secrets \"token\" is forbidden: User \"bob\" cannot get resource",
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        );
        let subject = Subject {
            kind: "Secret",
            resource: "secrets",
            otau: false,
            namespace: Some("fleet"),
            name: Some("token"),
            verb: "get",
        };
        let text = subject.explain(error).to_string();
        assert!(
            text.starts_with("get Secret fleet/token: forbidden"),
            "{text}"
        );
        assert!(
            text.contains("ask for `get` on secrets in namespace fleet"),
            "{text}"
        );
    }
}
