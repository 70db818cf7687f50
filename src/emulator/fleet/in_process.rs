//! The in-process fleet: every device of a [`FleetCore`] talks to a model [`Connector`]
//! directly, with no HTTP and no task per device. Cloud writes of `config_otau` arrive through
//! the connector's cloud-write notices (one channel for the whole fleet); timers come from the
//! core's one queue. Runs in virtual time (a [`ManualClock`] moved to the next due timer) or in
//! real time.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use crate::emulator::clock::{Clock, ManualClock};
use crate::emulator::model::{CloudWriteNotice, Connector, ModelError, Tag, WriteOrigin};
use crate::otau::{CONFIG_OTAU, OTAU_IN};

use super::core::FleetCore;
use super::device::{Action, Input};
use super::summary::{DriverCounters, FleetSummary};

/// A fleet bound to one connector of an in-process model.
pub struct InProcessFleet {
    core: FleetCore,
    connector: Arc<Connector>,
    notices: UnboundedReceiver<CloudWriteNotice>,
    clock: Arc<dyn Clock>,
    origin: WriteOrigin,
    counters: DriverCounters,
    out: Vec<Action>,
    started: bool,
    sink: Option<(Arc<Mutex<FleetSummary>>, i64)>,
}

impl std::fmt::Debug for InProcessFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessFleet")
            .field("connector", &self.connector.id())
            .field("devices", &self.core.len())
            .finish_non_exhaustive()
    }
}

impl InProcessFleet {
    /// Adds every device of `core` to `connector` (whitelisted, with its group's tags; existing
    /// identities are kept) and subscribes to the connector's cloud writes. Time comes from
    /// `clock`, which must be the model's clock.
    pub fn new(
        core: FleetCore,
        connector: Arc<Connector>,
        clock: Arc<dyn Clock>,
    ) -> Result<InProcessFleet, ModelError> {
        let notices = connector.subscribe_cloud_writes();
        for group in core.groups() {
            let tags: Vec<Tag> = group
                .tags
                .iter()
                .map(|t| Tag::new(&t.name, &t.value))
                .collect();
            let first = group.first;
            let ids =
                (first..first + group.count).map(|i| (core.identity(i).to_string(), tags.clone()));
            connector.add_identities_bulk(ids)?;
        }
        Ok(InProcessFleet {
            core,
            connector,
            notices,
            clock,
            origin: WriteOrigin {
                ip: String::new(),
                connection_id: "fleet".into(),
            },
            counters: DriverCounters::default(),
            out: Vec::new(),
            started: false,
            sink: None,
        })
    }

    /// The fleet's devices.
    pub fn core(&self) -> &FleetCore {
        &self.core
    }

    /// The connector the fleet lives on.
    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    /// Counters of the run so far.
    pub fn summary(&self) -> FleetSummary {
        FleetSummary::new(&self.core, &self.counters)
    }

    /// Publishes the summary into `sink` about once a second while running in real time.
    pub fn publish_to(&mut self, sink: Arc<Mutex<FleetSummary>>) {
        self.sink = Some((sink, i64::MIN));
    }

    fn publish(&mut self, force: bool) {
        let now = self.clock.now_micros();
        let due = match &self.sink {
            Some((_, last)) => force || now.saturating_sub(*last) >= 1_000_000,
            None => false,
        };
        if due {
            let summary = self.summary();
            if let Some((sink, last)) = &mut self.sink {
                *sink.lock().unwrap_or_else(|e| e.into_inner()) = summary;
                *last = now;
            }
        }
    }

    /// Boots every device (or sends it offline), once.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let now = self.clock.now_micros();
        for i in 0..self.core.len() as u32 {
            self.give(i, Input::Start, now);
        }
    }

    /// Handles every cloud write received so far; returns how many.
    pub fn drain_notices(&mut self) -> usize {
        let mut n = 0;
        loop {
            match self.notices.try_recv() {
                Ok(notice) => {
                    self.on_notice(&notice);
                    n += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return n,
            }
        }
    }

    /// Fires every timer due at or before `now`; returns how many.
    pub fn fire_due(&mut self, now: i64) -> usize {
        let mut n = 0;
        while let Some(t) = self.core.pop_due(now) {
            self.give(t.device, Input::Timer(t.seq), now);
            n += 1;
        }
        n
    }

    /// Runs in virtual time: handles pending cloud writes, then moves `clock` to the next due
    /// timer and fires it, until no timer is left or the next one is after `until` (µs).
    /// `clock` must be the model's clock. Returns the summary.
    pub fn run_virtual(&mut self, clock: &ManualClock, until: Option<i64>) -> FleetSummary {
        self.start();
        loop {
            self.drain_notices();
            let Some(due) = self.core.next_due() else {
                break;
            };
            if until.is_some_and(|u| due > u) {
                break;
            }
            clock.advance_to(due);
            self.fire_due(clock.now_micros());
        }
        self.drain_notices();
        self.summary()
    }

    /// Runs in real time until `stop` resolves: timers fire when due by the clock, cloud
    /// writes are handled as they arrive.
    pub async fn run_real_time<F: std::future::Future<Output = ()>>(&mut self, stop: F) {
        self.start();
        tokio::pin!(stop);
        loop {
            let now = self.clock.now_micros();
            self.fire_due(now);
            self.publish(false);
            let mut handled = 0usize;
            while handled < 10_000 {
                match self.notices.try_recv() {
                    Ok(notice) => {
                        self.on_notice(&notice);
                        handled += 1;
                    }
                    Err(_) => break,
                }
            }
            if handled == 10_000 {
                tokio::task::yield_now().await;
                continue;
            }
            let wait = self
                .core
                .next_due()
                .map(|due| (due - self.clock.now_micros()).clamp(0, 60_000_000))
                .unwrap_or(60_000_000);
            let sleep = tokio::time::sleep(std::time::Duration::from_micros(wait as u64));
            tokio::pin!(sleep);
            tokio::select! {
                _ = &mut stop => {
                    self.publish(true);
                    return;
                }
                notice = self.notices.recv() => match notice {
                    Some(n) => self.on_notice(&n),
                    None => (&mut sleep).await,
                },
                _ = &mut sleep => {}
            }
        }
    }

    fn on_notice(&mut self, notice: &CloudWriteNotice) {
        if &*notice.alias != CONFIG_OTAU {
            return;
        }
        let Some(index) = self.core.index_of(&notice.identity) else {
            return; // a device of someone else
        };
        self.read_config(index);
    }

    fn read_config(&mut self, index: u32) {
        let identity = self.core.identity(index).to_string();
        match self.connector.read_set(&identity, CONFIG_OTAU) {
            Ok(Some(set)) => {
                let now = self.clock.now_micros();
                self.give(index, Input::Config(&set.value), now);
            }
            Ok(None) => {}
            Err(_) => self.counters.errors += 1,
        }
    }

    /// A read the way the OTA guide polls (`If-Modified-Since: 0`): the current value at once,
    /// `""` when none was ever set.
    fn poll_config(&mut self, index: u32) {
        let identity = self.core.identity(index).to_string();
        let value = match self.connector.read_set(&identity, CONFIG_OTAU) {
            Ok(set) => set.map(|s| s.value.to_string()).unwrap_or_default(),
            Err(_) => {
                self.counters.errors += 1;
                String::new()
            }
        };
        let now = self.clock.now_micros();
        self.give(index, Input::Config(&value), now);
    }

    /// Gives `input` to device `index`, then carries out its actions.
    fn give(&mut self, index: u32, input: Input<'_>, now: i64) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.core.handle(index, input, now, &mut out);
        for action in out.drain(..) {
            self.act(index, action);
        }
        self.out = out;
    }

    fn act(&mut self, index: u32, action: Action) {
        match action {
            Action::Report(value) => {
                self.counters.reports += 1;
                self.write(index, OTAU_IN, &value);
            }
            Action::Ack(value) => {
                self.counters.acks += 1;
                self.write(index, CONFIG_OTAU, &value);
            }
            Action::Download(id) => {
                let ok = self.download(&id);
                let now = self.clock.now_micros();
                self.give(index, Input::Downloaded(ok), now);
            }
            Action::FetchLink(_) => self.counters.links += 1,
            Action::ReadConfig => self.read_config(index),
            Action::Poll => self.poll_config(index),
            // The core queues timers itself.
            Action::Schedule { .. } => {}
        }
    }

    fn write(&mut self, index: u32, alias: &str, value: &str) {
        let identity = self.core.identity(index);
        if self
            .connector
            .device_write(identity, &[(alias, value)], &self.origin)
            .is_err()
        {
            self.counters.errors += 1;
        }
    }

    /// Reads the item's info and its bytes, and checks that the sizes agree.
    fn download(&mut self, id: &str) -> bool {
        self.counters.downloads += 1;
        let content = self.connector.content();
        let Some(item) = content.get(id) else {
            return false;
        };
        let expected = item.info().length;
        match content.read(id, None) {
            Ok(bytes) if bytes.len() as u64 == expected => {
                self.counters.bytes += expected;
                true
            }
            _ => false,
        }
    }
}
