//! Emulator tests: one test binary, one module per area (real loopback HTTP where HTTP is
//! involved).

mod fleet;
