//! Which MQTT session holds which device, and the routing of cloud writes to it: one task per
//! connector reads the connector's cloud-write notices ([`Connector::subscribe_cloud_writes`])
//! and hands each to the session of the device written, at once, whether or not the device
//! subscribed (exosite-platform.md §4.2). A device has at most one session: a newer connection
//! takes over and the older one is closed.
//!
//! Cost: one map entry (connector id, device slot → channel) per connected device, nothing for
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
    /// A newer connection of the same device took over: close.
    TakenOver,
}

type Key = (Arc<str>, u32);

struct Entry {
    session: u64,
    tx: mpsc::UnboundedSender<ToSession>,
}

/// The sessions of every MQTT listener of one model.
pub(crate) struct Hub {
    sessions: Mutex<HashMap<Key, Entry>>,
    dispatched: Mutex<HashSet<String>>,
    next_session: AtomicU64,
    stop: watch::Receiver<bool>,
}

fn poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    e.into_inner()
}

/// A session's place in the hub; leaving it (drop) removes the device's entry unless a newer
/// session took it over.
pub(crate) struct Registration {
    hub: Arc<Hub>,
    key: Key,
    session: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<ToSession>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions.lock().unwrap_or_else(poisoned);
        if sessions
            .get(&self.key)
            .is_some_and(|e| e.session == self.session)
        {
            sessions.remove(&self.key);
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

    /// Devices connected now.
    pub(crate) fn connected(&self) -> usize {
        self.sessions.lock().unwrap_or_else(poisoned).len()
    }

    /// Registers `session` as the holder of `device` of `connector`; an older holder is told
    /// it was taken over.
    pub(crate) fn register(
        self: &Arc<Hub>,
        connector: &Arc<Connector>,
        device: DeviceId,
        session: u64,
    ) -> Registration {
        self.ensure_dispatcher(connector);
        let key: Key = (Arc::from(connector.id()), device.0);
        let (tx, rx) = mpsc::unbounded_channel();
        let older = self
            .sessions
            .lock()
            .unwrap_or_else(poisoned)
            .insert(key.clone(), Entry { session, tx });
        if let Some(older) = older {
            let _ = older.tx.send(ToSession::TakenOver);
        }
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
        if let Some(entry) = sessions.get(&(cid.clone(), notice.device.0)) {
            let _ = entry.tx.send(ToSession::CloudWrite {
                alias: notice.alias,
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
