//! The Kubernetes client, from the kubeconfig the way kubectl picks it: `--kubeconfig`, else
//! `$KUBECONFIG`, else `~/.kube/config` (or the in-cluster account); `--context`; the
//! namespace from `-n`, else the context's, else `default`.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::cli::GlobalArgs;
use super::error::PluginError;

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Target {
    /// The client, with the user's rights.
    pub client: Client,
    /// The namespace of `-n` or of the context.
    pub namespace: String,
}

/// Builds the client for `args`.
pub async fn connect(args: &GlobalArgs) -> Result<Target, PluginError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| PluginError::Kubeconfig(format!("reading {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| PluginError::Kubeconfig(format!("{}: {e}", path.display())))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| PluginError::Kubeconfig(e.to_string()))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| PluginError::Kubeconfig(e.to_string()))?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| PluginError::Kubeconfig(e.to_string()))?;
    Ok(Target { client, namespace })
}
