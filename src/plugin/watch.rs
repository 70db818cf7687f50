//! `status --watch`: redraws the view whenever the Rollout changes, from the watch API (no
//! polling), until it completes or is aborted, or until Ctrl-C.

use std::process::ExitCode;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::rollout::{Rollout, RolloutPhase};

use super::client::Target;
use super::error::PluginError;
use super::output::print_text;
use super::render;
use super::style::Style;

/// Resolves at the first Ctrl-C (SIGINT). On Unix the handler is installed at once, before
/// the returned future is first polled.
fn interrupt_listener() -> Result<impl std::future::Future<Output = ()>, PluginError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| PluginError::Output(format!("listening for Ctrl-C: {e}")))?;
        Ok(async move {
            sigint.recv().await;
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// What a redraw depends on: a change elsewhere (resourceVersion, managed fields) is not
/// redrawn.
fn view_key(rollout: &Rollout) -> String {
    serde_json::to_string(&(
        &rollout.spec,
        &rollout.status,
        &rollout.metadata.annotations,
    ))
    .unwrap_or_default()
}

/// Draws one frame: on a terminal the screen is cleared first, elsewhere frames follow one
/// another separated by a blank line.
fn draw(rollout: &Rollout, style: &Style, first: bool) -> Result<(), PluginError> {
    let view = render::status_view(rollout, Timestamp::now(), style);
    let frame = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        format!("\x1b[H\x1b[2J{view}")
    } else if first {
        view
    } else {
        format!("\n{view}")
    };
    print_text(&frame)
}

/// The exit of a watch that saw the rollout end.
fn ended(rollout: &Rollout) -> ExitCode {
    if render::phase(rollout) == RolloutPhase::Aborted {
        eprintln!(
            "rollout {}/{} was aborted",
            rollout.metadata.namespace.as_deref().unwrap_or_default(),
            rollout.metadata.name.as_deref().unwrap_or_default()
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Watches `initial` (already read, so errors were named) until it ends.
pub async fn watch(
    target: &Target,
    style: &Style,
    initial: Rollout,
) -> Result<ExitCode, PluginError> {
    // Listen for Ctrl-C before the first frame, so an early one is never lost.
    let interrupted = interrupt_listener()?;
    tokio::pin!(interrupted);
    draw(&initial, style, true)?;
    if render::has_ended(&initial) {
        return Ok(ended(&initial));
    }
    let name = initial.metadata.name.clone().unwrap_or_default();
    let mut last = view_key(&initial);
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut interrupted => return Ok(ExitCode::SUCCESS),
        };
        match event {
            None => return Ok(ExitCode::SUCCESS),
            Some(Err(error)) => {
                // The watcher retries with backoff; say why the view is not moving.
                let error = super::style::shown(&error.to_string());
                eprintln!("warning: watching rollout {name}: {error} (retrying)");
            }
            Some(Ok(watcher::Event::Apply(rollout) | watcher::Event::InitApply(rollout))) => {
                let key = view_key(&rollout);
                if key != last {
                    last = key;
                    draw(&rollout, style, false)?;
                }
                if render::has_ended(&rollout) {
                    return Ok(ended(&rollout));
                }
            }
            Some(Ok(watcher::Event::Delete(_))) => {
                return Err(PluginError::Refused(format!(
                    "rollout {}/{name} was deleted while watching",
                    target.namespace
                )));
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
        }
    }
}
