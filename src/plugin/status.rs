//! `status ROLLOUT [--watch] [-o json|yaml]`.

use std::process::ExitCode;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;

use crate::api::rollout::Rollout;

use super::cli::StatusArgs;
use super::client::Target;
use super::error::{PluginError, Subject};
use super::output;
use super::render;
use super::style::Style;
use super::watch;

/// The subject of requests about one Rollout.
pub fn rollout_subject<'a>(namespace: &'a str, name: &'a str, verb: &'a str) -> Subject<'a> {
    Subject {
        kind: "Rollout",
        resource: "rollouts",
        otau: true,
        namespace: Some(namespace),
        name: Some(name),
        verb,
    }
}

/// Reads one Rollout, with errors that name it.
pub async fn get_rollout(target: &Target, name: &str) -> Result<Rollout, PluginError> {
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    api.get(name)
        .await
        .map_err(|e| rollout_subject(&target.namespace, name, "get").explain(e))
}

/// Runs `status`.
pub async fn run(
    target: &Target,
    style: &Style,
    args: StatusArgs,
) -> Result<ExitCode, PluginError> {
    let mut rollout = get_rollout(target, &args.name).await?;
    if let Some(format) = args.output {
        rollout.metadata.managed_fields = None;
        output::print(format, &rollout)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.watch {
        return watch::watch(target, style, rollout).await;
    }
    output::print_text(&render::status_view(&rollout, Timestamp::now(), style))?;
    Ok(ExitCode::SUCCESS)
}
