//! `otau-operator simulate` as a process: outcomes on fixed seeds with the expected numbers
//! derived here from the profile and the policy (never recorded from the tool's output), a
//! multi-day soak in virtual time, byte-identical JSON for the same seed, clear errors for bad
//! YAML, and the progress bars through a pseudo-terminal.

mod bad_input;
mod determinism;
mod harness;
mod outcomes;
mod progress;
