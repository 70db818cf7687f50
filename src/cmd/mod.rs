//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> ExitCode`.

pub mod crds;
pub mod emulator;
pub mod run;
mod signal;
pub mod simulate;
