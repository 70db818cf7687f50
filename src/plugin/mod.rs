//! `kubectl otau`: a kubectl plugin to watch and drive Rollouts from a terminal.
//!
//! kubectl finds the `kubectl-otau` binary on `PATH` and runs it as `kubectl otau ...`. The
//! plugin reads Rollouts with the user's own kubeconfig rights and acts only through the
//! mechanisms a Git user has: the one-shot annotations of docs/rollouts.md (`otau.dev/pause`,
//! `otau.dev/resume`, `otau.dev/approve`, `otau.dev/abort`, each with a fresh random nonce). It
//! never writes `status` nor any `spec` field.
//!
//! Uses [`crate::api`], [`crate::otau`], [`crate::platform`] (`devices` reads the platform
//! with the connector's credentials) and the pure [`crate::engine`] (to name each device's
//! state exactly as the operator counts it); never the controller or the emulator.

mod actions;
mod cli;
mod client;
mod devices;
mod error;
mod list;
mod output;
mod render;
mod status;
mod style;
mod watch;

use std::process::ExitCode;

pub use cli::{Cli, Command, GlobalArgs, OutputFormat, StateFilter};
pub use error::PluginError;

/// Runs one `kubectl otau` command; prints the result (stdout) or the error (stderr).
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            // An error may quote the platform (a listing's error body) or an object: shown
            // like any such text, so it cannot write to the terminal either.
            eprintln!("error: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// The text of `error` as printed on stderr: control and invisible characters escaped, at most
/// 4 KiB.
pub fn error_text(error: &PluginError) -> String {
    crate::otau::safe_text(&error.to_string(), 4096)
}

async fn dispatch(cli: Cli) -> Result<ExitCode, PluginError> {
    let target = client::connect(&cli.global).await?;
    let style = style::Style::for_stdout();
    match cli.command {
        Command::Status(args) => status::run(&target, &style, args).await,
        Command::List(args) => list::run_list(&target, &style, args).await,
        Command::Plan(args) => list::run_plan(&target, &style, args).await,
        Command::Pause(args) => actions::pause(&target, args).await,
        Command::Resume(args) => actions::resume(&target, args).await,
        Command::Abort(args) => actions::abort(&target, args).await,
        Command::Approve(args) => actions::approve(&target, args).await,
        Command::Devices(args) => devices::run(&target, &style, args).await,
    }
}
