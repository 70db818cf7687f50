//! How much memory a simulated fleet needs, estimated before anything is allocated, so a
//! `--devices` count the machine cannot hold is refused with the numbers instead of ending in
//! an allocation failure half-way through building the fleet.

use otau_operator::emulator::fleet::Profile;

/// Peak memory per simulated device, in bytes: the peak RSS of a 1,000,000-device run
/// (`hack/simulate-bench.sh`, docs/simulate.md: 715 MiB, 749 B per device), rounded up. It
/// holds the model (identity, resource values, ground truth, change log), the fleet and the
/// engine's index.
pub const BYTES_PER_DEVICE: u64 = 750;

/// Memory the process may use: the smaller of `MemAvailable` (`/proc/meminfo`) and what the
/// cgroup v2 limit (`/sys/fs/cgroup/memory.max`) leaves, with where it was read; `None` where
/// neither can be read.
pub fn available() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mem_available = meminfo.as_deref().and_then(mem_available_bytes);
    let cgroup = cgroup_room(
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok(),
        std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok(),
    );
    match (mem_available, cgroup) {
        (Some(m), Some(c)) if c < m => Some((c, "left under the cgroup's memory.max")),
        (Some(m), _) => Some((m, "MemAvailable in /proc/meminfo")),
        (None, Some(c)) => Some((c, "left under the cgroup's memory.max")),
        (None, None) => None,
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a cgroup v2 limit leaves (`max` is no limit).
fn cgroup_room(max: Option<String>, current: Option<String>) -> Option<u64> {
    let max: u64 = max?.trim().parse().ok()?;
    let current: u64 = current.and_then(|c| c.trim().parse().ok()).unwrap_or(0);
    Some(max.saturating_sub(current))
}

/// `bytes` for people: `715.3 MiB`, `2.7 TiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses a fleet whose estimated memory ([`BYTES_PER_DEVICE`] per device) is more than
/// `available` (bytes, and where that figure comes from). A profile that cannot be sized is
/// let through: building the fleet reports that problem with its own message.
pub fn check(
    profile: &Profile,
    devices: Option<u64>,
    available: Option<(u64, &str)>,
) -> Result<(), String> {
    let Ok(sizes) = profile.resolve(devices) else {
        return Ok(());
    };
    let n: u64 = sizes.iter().map(|s| s.count).sum();
    let needed = n.saturating_mul(BYTES_PER_DEVICE);
    let Some((room, source)) = available else {
        return Ok(());
    };
    if needed <= room {
        return Ok(());
    }
    let asked = match devices {
        Some(d) => format!("--devices {d}"),
        None => "the profile's groups".to_owned(),
    };
    Err(format!(
        "{asked}: a fleet of {n} devices needs about {} of memory ({BYTES_PER_DEVICE} bytes per \
         device, measured), more than the {} available ({source}); simulate at most {} devices \
         here",
        human_bytes(needed),
        human_bytes(room),
        room / BYTES_PER_DEVICE
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fractions() -> Profile {
        Profile::from_yaml(
            "groups:\n  - {name: a, fraction: 0.5, identity_prefix: a-, version: '1'}\n  - {name: b, fraction: 0.5, identity_prefix: b-, version: '1'}\n",
        )
        .expect("profile")
    }

    #[test]
    fn a_fleet_larger_than_memory_is_refused_with_the_numbers() {
        let gib = 1024 * 1024 * 1024;
        let err = check(&fractions(), Some(4_000_000_000), Some((22 * gib, "test")))
            .expect_err("too large");
        assert!(
            err.starts_with(
                "--devices 4000000000: a fleet of 4000000000 devices needs about 2.7 TiB"
            ),
            "{err}"
        );
        assert!(
            err.contains("more than the 22.0 GiB available (test)"),
            "{err}"
        );
        assert!(
            err.contains(&format!("at most {} devices", 22 * gib / 750)),
            "{err}"
        );
        // What fits is let through, and so is an unknown amount of memory.
        assert_eq!(
            check(&fractions(), Some(1_000_000), Some((gib, "test"))),
            Ok(())
        );
        assert_eq!(check(&fractions(), Some(4_000_000_000), None), Ok(()));
    }

    #[test]
    fn available_memory_is_read_from_meminfo_and_the_cgroup() {
        let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available_bytes(meminfo), Some(20_000_000 * 1024));
        assert_eq!(cgroup_room(Some("max\n".into()), Some("5".into())), None);
        assert_eq!(
            cgroup_room(Some("1000\n".into()), Some("400\n".into())),
            Some(600)
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
