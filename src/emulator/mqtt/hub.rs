//! Which MQTT session holds which device, and the routing of cloud writes to it: one task per
//! connector reads the connector's cloud-write notices ([`Connector::subscribe_cloud_writes`])
//! and hands each to the session of the device written, at once, whether or not the device
//! subscribed (exosite-platform.md §4.2). A device may hold several sessions at once (the
//! contract has no client id to tell them apart, and a developer's `mosquitto_sub` and
//! `mosquitto_pub` with the same token must not close each other): each receives every cloud
//! write; a half-open old session ends at its keep-alive.
//!
//! Cost: one map entry (connector id, device slot → channels) per connected device, nothing for
//! a device that is not connected; nothing is remembered across a restart (a reconnecting
//! device gets its unsynced set values from the model, §4.4).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, watch};

use crate::emulator::model::{CloudWriteNotice, Connector, DeviceId};

/// What the hub tells a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToSession {
    /// The cloud wrote `alias` at `at` µs: publish the current set value.
    CloudWrite {
        /// The resource.
        alias: Arc<str>,
        /// When, µs (the topic suffix).
        at: i64,
    },
}

type Key = (Arc<str>, u32);

struct Entry {
    session: u64,
    tx: mpsc::UnboundedSender<ToSession>,
}

/// The sessions of every MQTT listener of one model.
pub(crate) struct Hub {
    sessions: Mutex<HashMap<Key, Vec<Entry>>>,
    dispatched: Mutex<HashSet<String>>,
    next_session: AtomicU64,
    stop: watch::Receiver<bool>,
}

fn poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    e.into_inner()
}

/// A session's place in the hub; leaving it (drop) removes it.
pub(crate) struct Registration {
    hub: Arc<Hub>,
    key: Key,
    session: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<ToSession>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions.lock().unwrap_or_else(poisoned);
        if let Some(entries) = sessions.get_mut(&self.key) {
            entries.retain(|e| e.session != self.session);
            if entries.is_empty() {
                sessions.remove(&self.key);
            }
        }
    }
}

impl Hub {
    pub(crate) fn new(stop: watch::Receiver<bool>) -> Arc<Hub> {
        Arc::new(Hub {
            sessions: Mutex::new(HashMap::new()),
            dispatched: Mutex::new(HashSet::new()),
            next_session: AtomicU64::new(1),
            stop,
        })
    }

    /// A fresh session number (connection ids of events).
    pub(crate) fn session_number(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Devices with at least one session now.
    pub(crate) fn connected(&self) -> usize {
        self.sessions.lock().unwrap_or_else(poisoned).len()
    }

    /// Registers `session` as one holder of `device` of `connector`.
    pub(crate) fn register(
        self: &Arc<Hub>,
        connector: &Arc<Connector>,
        device: DeviceId,
        session: u64,
    ) -> Registration {
        self.ensure_dispatcher(connector);
        let key: Key = (Arc::from(connector.id()), device.0);
        let (tx, rx) = mpsc::unbounded_channel();
        self.sessions
            .lock()
            .unwrap_or_else(poisoned)
            .entry(key.clone())
            .or_default()
            .push(Entry { session, tx });
        Registration {
            hub: self.clone(),
            key,
            session,
            rx,
        }
    }

    fn ensure_dispatcher(self: &Arc<Hub>, connector: &Arc<Connector>) {
        let mut dispatched = self.dispatched.lock().unwrap_or_else(poisoned);
        if !dispatched.insert(connector.id().to_string()) {
            return;
        }
        let notices = connector.subscribe_cloud_writes();
        let cid: Arc<str> = Arc::from(connector.id());
        tokio::spawn(dispatch(
            Arc::downgrade(self),
            cid,
            notices,
            self.stop.clone(),
        ));
    }

    fn deliver(&self, cid: &Arc<str>, notice: CloudWriteNotice) {
        let sessions = self.sessions.lock().unwrap_or_else(poisoned);
        for entry in sessions
            .get(&(cid.clone(), notice.device.0))
            .into_iter()
            .flatten()
        {
            let _ = entry.tx.send(ToSession::CloudWrite {
                alias: notice.alias.clone(),
                at: notice.at,
            });
        }
    }
}

/// Hands every cloud write of one connector to the session of its device, until the hub is
/// gone or its listeners stop.
async fn dispatch(
    hub: Weak<Hub>,
    cid: Arc<str>,
    mut notices: mpsc::UnboundedReceiver<CloudWriteNotice>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            () = super::stopped(&mut stop) => return,
        };
        let (Some(notice), Some(hub)) = (notice, hub.upgrade()) else {
            return;
        };
        hub.deliver(&cid, notice);
    }
}
