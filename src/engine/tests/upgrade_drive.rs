/// A fleet of 40 devices in wave order: in every ten, two refuse (`INSTALL_ABORTED`), one sends
/// an unreadable report, seven install. Wave 1 (10 devices) thus holds 3 refusals or unreadable
/// reports: no failure for the previous release, 30 % for this one.
fn fleet() -> Fleet {
    Fleet::ordered(40, SEED, |p, d| {
        d.outcomes = match p % 10 {
            0 | 1 => vec![Outcome::Abort],
            2 => vec![Outcome::Malformed],
            _ => vec![Outcome::Succeed],
        }
    })
}

/// Drives a Rollout over [`fleet`] to the point each fixture was taken: `mid-wave` (wave 1
/// complete, wave 2 written and in flight), `aborted` (aborted by `spec.abort` after wave 1),
/// `complete` (every wave complete).
fn drive(kind: &str, spec: RolloutSpec) -> Run {
    let mut run = Run::new(spec, fleet());
    run.step();
    run.wait(2 * MINUTE);
    run.step();
    match kind {
        "mid-wave" => {}
        "aborted" => {
            run.edit(|s| s.abort = true);
            run.step();
        }
        "complete" => {
            run.wait(2 * MINUTE);
            run.step();
        }
        other => panic!("no fixture {other}"),
    }
    run
}

/// Every device's writes (attempts), by identity.
fn writes(run: &Run) -> BTreeMap<String, Vec<u32>> {
    run.fleet
        .devices
        .iter()
        .map(|d| (d.identity.clone(), d.writes.clone()))
        .collect()
}

/// The fixture file of `kind`.
fn fixture_path(kind: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade")
        .join(format!("rollout-{kind}.json"))
}

const KINDS: [&str; 3] = ["mid-wave", "aborted", "complete"];
