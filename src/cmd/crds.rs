//! `otau-operator crds`: prints the CRDs, or writes them into a folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use otau_operator::api;

/// Arguments of `crds`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one file per CRD (`<plural>.otau.dev.yaml`) into this folder instead of printing a
    /// multi-document YAML stream. `cargo run -- crds --output-dir crds` refreshes the committed
    /// copies.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Prints every CRD as YAML, or writes them into `--output-dir`.
pub fn run(args: Args) -> ExitCode {
    let result = match &args.output_dir {
        Some(dir) => write_files(dir),
        None => print_stream(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("otau-operator crds: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_stream() -> Result<(), String> {
    let yaml = api::crds_yaml().map_err(|e| format!("cannot render the CRDs as YAML: {e}"))?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

fn write_files(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the folder {}: {e}", dir.display()))?;
    for crd in api::crds() {
        let path = dir.join(api::crd_file_name(&crd));
        let yaml = api::crd_yaml(&crd).map_err(|e| format!("cannot render a CRD as YAML: {e}"))?;
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
