//! The fleet's state without any I/O: every device's compact state, the identities (one string
//! arena), the catalog, counters, and the timer queue. Drivers feed it inputs and carry out the
//! actions it returns.

use super::catalog::Catalog;
use super::device::{Action, Ctx, DeviceState, Input, RunStats};
use super::profile::{Behaviour, Profile, ProfileError, Tag};
use super::seed;
use super::timers::{Timer, TimerQueue};

/// One resolved group of the fleet.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Identity prefix.
    pub prefix: String,
    /// Tags of its devices.
    pub tags: Vec<Tag>,
    /// Index of its first device.
    pub first: u32,
    /// Number of devices.
    pub count: u32,
    /// Digits of the zero-padded index in identities.
    pub width: usize,
    /// Share of its devices on MQTT in a socket fleet (`transport.mqtt`).
    pub mqtt: f64,
    /// Share of those whose HTTP goes to the MQTT TLS port (`transport.http_on_mqtt_port`).
    pub http_on_mqtt_port: f64,
}

/// The device protocol a device speaks in a socket fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The device HTTP API (exosite-platform.md §3).
    Http,
    /// The device MQTT API (exosite-platform.md §4).
    Mqtt,
}

/// All devices of a fleet.
#[derive(Debug)]
pub struct FleetCore {
    devices: Vec<DeviceState>,
    /// Identities, concatenated; device `i` is `arena[ends[i-1]..ends[i]]`.
    arena: String,
    ends: Vec<u32>,
    groups: Vec<GroupInfo>,
    behaviours: Vec<Behaviour>,
    catalog: Catalog,
    stats: RunStats,
    timers: TimerQueue,
}

/// The identity of device `index` of a group: prefix + zero-padded index.
pub fn identity(prefix: &str, width: usize, index: u64) -> String {
    format!("{prefix}{index:0width$}")
}

impl FleetCore {
    /// Builds the devices of `profile` (group sizes resolved against `total`, if given).
    /// `seed` overrides the profile's seed.
    pub fn new(
        profile: &Profile,
        total: Option<u64>,
        seed_override: Option<u64>,
    ) -> Result<FleetCore, ProfileError> {
        profile.validate()?;
        let sizes = profile.resolve(total)?;
        let fleet_seed = seed_override.unwrap_or(profile.seed);
        let n: u64 = sizes.iter().map(|s| s.count).sum();
        let mut catalog = Catalog::default();
        let mut devices = Vec::with_capacity(n as usize);
        let mut ends = Vec::with_capacity(n as usize);
        let mut arena = String::new();
        let mut groups = Vec::with_capacity(sizes.len());
        let behaviours: Vec<Behaviour> =
            profile.groups.iter().map(|g| g.behaviour.clone()).collect();
        for size in &sizes {
            let g = &profile.groups[size.group];
            let width = size.count.saturating_sub(1).to_string().len().max(6);
            let version = catalog.intern_version(&g.version);
            let first = devices.len() as u32;
            arena.reserve(size.count as usize * (g.identity_prefix.len() + width));
            for i in 0..size.count {
                let id = identity(&g.identity_prefix, width, i);
                let key = seed::device_key(fleet_seed, &id);
                devices.push(DeviceState::new(
                    key,
                    size.group as u16,
                    version,
                    &g.behaviour,
                ));
                arena.push_str(&id);
                ends.push(arena.len() as u32);
            }
            groups.push(GroupInfo {
                name: g.name.clone(),
                prefix: g.identity_prefix.clone(),
                tags: g.tags.clone(),
                first,
                count: size.count as u32,
                width,
                mqtt: g.transport.mqtt,
                http_on_mqtt_port: g.transport.http_on_mqtt_port,
            });
        }
        if arena.len() > u32::MAX as usize {
            return Err(ProfileError::Invalid {
                field: "groups".into(),
                reason: "identities are too long for one fleet".into(),
            });
        }
        Ok(FleetCore {
            devices,
            arena,
            ends,
            groups,
            behaviours,
            catalog,
            stats: RunStats::default(),
            timers: TimerQueue::new(),
        })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The identity of device `index`.
    pub fn identity(&self, index: u32) -> &str {
        let i = index as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(start, |e| *e as usize);
        &self.arena[start..end]
    }

    /// The device index of `identity`, if it belongs to this fleet (no map: parsed from the
    /// group prefix and the index).
    pub fn index_of(&self, identity: &str) -> Option<u32> {
        self.groups.iter().find_map(|g| {
            let digits = identity.strip_prefix(&g.prefix)?;
            if digits.len() != g.width || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let i: u32 = digits.parse().ok()?;
            (i < g.count).then_some(g.first + i)
        })
    }

    /// The group of device `index`.
    pub fn group_of(&self, index: u32) -> Option<&GroupInfo> {
        let group = self.devices.get(index as usize)?.group();
        self.groups.get(usize::from(group))
    }

    /// The protocol device `index` speaks in a socket fleet: MQTT with its group's
    /// `transport.mqtt` share, drawn from the device's key (the same seed gives the same
    /// devices), else HTTP.
    pub fn protocol(&self, index: u32) -> Protocol {
        let (Some(device), Some(group)) = (self.devices.get(index as usize), self.group_of(index))
        else {
            return Protocol::Http;
        };
        if group.mqtt <= 0.0 {
            return Protocol::Http;
        }
        let draw: f64 =
            rand::Rng::random(&mut seed::rng(device.key(), seed::Purpose::Transport, 0));
        if draw < group.mqtt {
            Protocol::Mqtt
        } else {
            Protocol::Http
        }
    }

    /// Whether device `index`, if on MQTT, sends its HTTP to the MQTT TLS port (its group's
    /// `transport.http_on_mqtt_port` share, drawn from the device's key).
    pub fn http_on_mqtt_port(&self, index: u32) -> bool {
        let (Some(device), Some(group)) = (self.devices.get(index as usize), self.group_of(index))
        else {
            return false;
        };
        group.http_on_mqtt_port > 0.0
            && rand::Rng::random::<f64>(&mut seed::rng(device.key(), seed::Purpose::Transport, 1))
                < group.http_on_mqtt_port
    }

    /// The groups, in order.
    pub fn groups(&self) -> &[GroupInfo] {
        &self.groups
    }

    /// The state of device `index`.
    pub fn device(&self, index: u32) -> Option<&DeviceState> {
        self.devices.get(index as usize)
    }

    /// The catalog of versions and manifests.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Run counters.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The timer queue.
    pub fn timers(&mut self) -> &mut TimerQueue {
        &mut self.timers
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.next_due()
    }

    /// Gives `input` to device `index` at time `now`. Schedules go straight into the timer
    /// queue; the other actions are appended to `out` for the driver.
    pub fn handle(&mut self, index: u32, input: Input<'_>, now: i64, out: &mut Vec<Action>) {
        let Some(device) = self.devices.get_mut(index as usize) else {
            return;
        };
        let start = out.len();
        let mut ctx = Ctx {
            behaviours: &self.behaviours,
            catalog: &mut self.catalog,
            stats: &mut self.stats,
        };
        device.handle(input, &mut ctx, out);
        let timers = &mut self.timers;
        let mut i = start;
        while i < out.len() {
            if let Action::Schedule { after_micros, seq } = out[i] {
                timers.push(Timer {
                    due: now.saturating_add(after_micros.max(0)),
                    device: index,
                    seq,
                });
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Pops the next timer due at or before `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<Timer> {
        self.timers.pop_due(now)
    }

    /// How many devices are busy with an update right now.
    pub fn busy(&self) -> usize {
        self.devices.iter().filter(|d| d.busy()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_index_of() {
        let p = Profile::from_yaml(
            "groups:\n  - {name: a, count: 3, identity_prefix: a-, version: '1'}\n  - {name: b, count: 2, identity_prefix: b-, version: '2'}\n",
        )
        .unwrap();
        let core = FleetCore::new(&p, None, None).unwrap();
        assert_eq!(core.len(), 5);
        assert_eq!(core.identity(0), "a-000000");
        assert_eq!(core.identity(4), "b-000001");
        for i in 0..5 {
            assert_eq!(core.index_of(core.identity(i)), Some(i));
        }
        assert_eq!(core.index_of("a-000003"), None);
        assert_eq!(core.index_of("a-0001"), None);
        assert_eq!(core.index_of("c-000000"), None);
        assert_eq!(
            core.catalog().version(core.device(3).unwrap().version()),
            "2"
        );
    }

    #[test]
    fn the_mqtt_share_picks_devices_by_seed_and_group() {
        let yaml = |seed: u64| {
            format!(
                "seed: {seed}\ngroups:\n  - {{name: a, count: 1000, identity_prefix: a-, version: '1', transport: {{mqtt: 0.3}}}}\n  - {{name: h, count: 10, identity_prefix: h-, version: '1'}}\n  - {{name: m, count: 10, identity_prefix: m-, version: '1', transport: {{mqtt: 1}}}}\n"
            )
        };
        let core = FleetCore::new(&Profile::from_yaml(&yaml(1)).unwrap(), None, None).unwrap();
        let mqtt = |core: &FleetCore, range: std::ops::Range<u32>| {
            range
                .filter(|i| core.protocol(*i) == Protocol::Mqtt)
                .collect::<Vec<_>>()
        };
        let share = mqtt(&core, 0..1000);
        assert!((250..350).contains(&share.len()), "{}", share.len());
        assert!(mqtt(&core, 1000..1010).is_empty());
        assert_eq!(mqtt(&core, 1010..1020).len(), 10);
        let again = FleetCore::new(&Profile::from_yaml(&yaml(1)).unwrap(), None, None).unwrap();
        assert_eq!(mqtt(&again, 0..1000), share, "same seed, same devices");
        let other = FleetCore::new(&Profile::from_yaml(&yaml(2)).unwrap(), None, None).unwrap();
        assert_ne!(mqtt(&other, 0..1000), share, "another seed, other devices");
        assert_eq!(core.protocol(5000), Protocol::Http);
    }
}
