//! `-o json|yaml`: machine-readable output for scripts.

use std::io::Write;

use serde::Serialize;

use super::cli::OutputFormat;
use super::error::PluginError;

/// The text of `value` in `format` (JSON pretty-printed, ending with a newline).
pub fn render<T: Serialize>(format: OutputFormat, value: &T) -> Result<String, PluginError> {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| PluginError::Output(e.to_string())),
        OutputFormat::Yaml => {
            serde_yaml::to_string(value).map_err(|e| PluginError::Output(e.to_string()))
        }
    }
}

/// Prints `value` in `format` to stdout.
pub fn print<T: Serialize>(format: OutputFormat, value: &T) -> Result<(), PluginError> {
    print_text(&render(format, value)?)
}

/// Prints text to stdout as is; a closed pipe (`| head`) is not an error.
pub fn print_text(text: &str) -> Result<(), PluginError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(PluginError::Output(e.to_string()))
        }
        _ => Ok(()),
    }
}
