//! [`Fleet::start`]: runs an in-process fleet in real time on one thread of its own (one thread
//! for the whole fleet, never one per device), for `otau-operator emulator --devices N
//! --profile F`.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::emulator::model::{Model, ModelError};

use super::core::FleetCore;
use super::in_process::InProcessFleet;
use super::profile::{Profile, ProfileError};
use super::summary::FleetSummary;

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The profile is not usable.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The model refused the identities.
    #[error("cannot add the fleet's devices to the connector: {0}")]
    Model(#[from] ModelError),
    /// The fleet's thread could not start.
    #[error("cannot start the fleet thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// How to size and seed a fleet.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// Fleet size for groups given as `fraction` (`--devices N`).
    pub devices: Option<u64>,
    /// Overrides the profile's seed.
    pub seed: Option<u64>,
}

/// Entry point for running simulated fleets.
#[derive(Debug)]
pub struct Fleet;

/// A running in-process fleet. Dropping it stops the fleet.
#[derive(Debug)]
pub struct FleetHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    summary: Arc<Mutex<FleetSummary>>,
    identities: Vec<(String, u64)>,
}

impl Fleet {
    /// The profile for `--devices N` without `--profile`: N devices `device-000000`… on version
    /// `1.0.0` that all succeed.
    pub fn default_profile(devices: u64) -> Profile {
        Profile::all_succeed("device-", "1.0.0", devices)
    }

    /// Adds the fleet's devices to the connector `connector` of `model` and runs them in real
    /// time (the model's clock) on a thread of their own, until the handle is stopped or
    /// dropped.
    pub fn start(
        model: &Model,
        connector: &str,
        profile: &Profile,
        options: &FleetOptions,
    ) -> Result<FleetHandle, FleetError> {
        let connector = model.require_connector(connector)?;
        let core = FleetCore::new(profile, options.devices, options.seed)?;
        let identities = core
            .groups()
            .iter()
            .map(|g| {
                (
                    format!("{}{}", g.prefix, "0".repeat(g.width)),
                    u64::from(g.count),
                )
            })
            .collect();
        let clock = model.clock().clone();
        let mut fleet = InProcessFleet::new(core, connector, clock)?;
        let summary = Arc::new(Mutex::new(fleet.summary()));
        fleet.publish_to(summary.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otau-fleet".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "simulated fleet cannot build its runtime");
                        return;
                    }
                };
                runtime.block_on(fleet.run_real_time(async {
                    let _ = stop_rx.await;
                }));
            })?;
        Ok(FleetHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
            summary,
            identities,
        })
    }
}

impl FleetHandle {
    /// The latest summary (refreshed about once a second).
    pub fn summary(&self) -> FleetSummary {
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Per group: the first identity and the number of devices (for hints on stderr).
    pub fn identities(&self) -> &[(String, u64)] {
        &self.identities
    }

    /// Stops the fleet and waits for its thread.
    pub fn stop(mut self) -> FleetSummary {
        self.shutdown();
        self.summary()
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
