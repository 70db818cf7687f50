//! `-o json|yaml`: machine-readable output for scripts.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use crate::otau::needs_escape;

use super::cli::OutputFormat;
use super::error::PluginError;

/// The text of `value` in `format` (JSON pretty-printed, ending with a newline), with no raw
/// control or invisible character ([`hide_nothing`]).
pub fn render<T: Serialize>(format: OutputFormat, value: &T) -> Result<String, PluginError> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| PluginError::Output(e.to_string()))?,
        OutputFormat::Yaml => {
            serde_yaml::to_string(value).map_err(|e| PluginError::Output(e.to_string()))?
        }
    };
    Ok(hide_nothing(&text, format))
}

/// Serialized `text` with every character [`needs_escape`] selects, other than the newlines
/// that lay the document out, written as an escape of the format. serde_json escapes the C0
/// controls itself but writes DEL, the C1 controls and bidi or zero-width characters as they
/// are; libyaml escapes the controls but writes bidi and zero-width characters as they are. In
/// JSON every such character is inside a string, so `\uXXXX` (a surrogate pair beyond U+FFFF)
/// keeps the data exact; in YAML `\uXXXX` (`\UXXXXXXXX`) is exact inside a double-quoted
/// scalar and reads as the escape itself inside a plain or block one: visible either way.
pub fn hide_nothing(text: &str, format: OutputFormat) -> String {
    if !text.chars().any(|c| c != '\n' && needs_escape(c)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c == '\n' || !needs_escape(c) {
            out.push(c);
            continue;
        }
        let code = u32::from(c);
        match (format, code) {
            (_, ..=0xFFFF) => {
                let _ = write!(out, "\\u{code:04X}");
            }
            (OutputFormat::Json, _) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
            (OutputFormat::Yaml, _) => {
                let _ = write!(out, "\\U{code:08X}");
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otau::is_safe_text;

    /// Device text with every kind of character a terminal acts on.
    const HOSTILE: &str =
        "\u{1b}[2J\u{7}\r\u{7f}\u{9b}31m\u{202e}gnp.exe\u{200b}\u{feff}\u{e0041}\tend";

    #[test]
    fn json_output_keeps_the_data_and_shows_no_raw_control_character() {
        let value = serde_json::json!({"message": HOSTILE, "ok": "plain ✔"});
        let text = render(OutputFormat::Json, &value).expect("json");
        assert!(
            text.chars().all(|c| c == '\n' || !needs_escape(c)),
            "{text:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(back, value, "the same data");
    }

    #[test]
    fn yaml_output_shows_no_raw_control_character_and_stays_yaml() {
        let value = serde_json::json!({"message": HOSTILE, "multi": "a\nb\u{202e}c"});
        let text = render(OutputFormat::Yaml, &value).expect("yaml");
        assert!(
            text.chars().all(|c| c == '\n' || !needs_escape(c)),
            "{text:?}"
        );
        let back: serde_json::Value = serde_yaml::from_str(&text).expect("still YAML");
        // Double-quoted scalars (libyaml picks them for the controls) keep the data exactly.
        assert_eq!(back["message"], value["message"], "{text}");
        let multi = back["multi"].as_str().expect("string");
        assert!(is_safe_text(&multi.replace('\n', "")), "{multi:?}");
    }
}
