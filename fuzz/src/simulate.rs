//! `simulate`'s input: its document reader and the memory estimate are modules of the
//! `otau-operator` binary (`src/cmd/simulate/`), compiled here from the same source files,
//! so the fuzzer runs exactly the code `simulate` runs without widening the library's API.

use std::path::Path;

#[allow(dead_code)]
#[path = "../../src/cmd/simulate/input.rs"]
mod input;
#[allow(dead_code)]
#[path = "../../src/cmd/simulate/memory.rs"]
mod memory;
#[allow(dead_code)]
#[path = "../../src/cmd/simulate/schema_check.rs"]
mod schema_check;

use otau_operator::emulator::fleet::Profile;

/// Reads `data` as the YAML files of `simulate -f` and, when it is a fleet profile, sizes its
/// fleet for a few `--devices` counts. Errors name the file and a line of it; a profile's
/// memory estimate never overflows.
pub fn read(file: &Path, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut out = input::Documents::default();
    let lines = text.lines().count() + 1;
    match input::read_text(file, &text, &mut out) {
        Ok(()) => {
            for place in out
                .rollouts
                .iter()
                .map(|r| &r.place)
                .chain(out.packages.iter().map(|p| &p.place))
            {
                assert!(
                    line_in(place, file, lines),
                    "{place} is not a line of the file"
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&file.display().to_string()),
                "the error names the file: {message}"
            );
        }
    }
    if let Ok(profile) = Profile::from_yaml(&text) {
        for devices in [None, Some(0), Some(1_000), Some(u64::MAX)] {
            let _ = memory::check(&profile, devices, Some((1 << 30, "fuzz")));
        }
    }
}

/// Whether `place` is `<file>:<line>` with a line of a file of `lines` lines.
fn line_in(place: &str, file: &Path, lines: usize) -> bool {
    place
        .strip_prefix(&format!("{}:", file.display()))
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| (1..=lines).contains(&l))
}
