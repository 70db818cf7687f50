//! Terminal presentation: colour only on a terminal and never with `NO_COLOR`, aligned
//! tables like kubectl's, ages like kubectl's (`45s`, `3m12s`, `2h`, `5d`), and text read
//! from an object or the platform shown only through [`shown`].

use std::io::IsTerminal;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::otau::safe_text;

/// The longest text from an object or the platform one field or table cell shows, in bytes.
pub const MAX_SHOWN_BYTES: usize = 512;

/// Text read from an object or the platform (a device's identity or message, a condition
/// message, any string of the status) as the plugin prints it: control and invisible
/// characters escaped and the length bounded by [`safe_text`], so a device cannot write to
/// the reader's terminal. Objects may hold raw text (an older operator, another writer), so
/// the plugin escapes again what the operator already escaped.
pub fn shown(text: &str) -> String {
    safe_text(text, MAX_SHOWN_BYTES)
}

/// A colour for a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Done well.
    Good,
    /// Needs attention (paused, waiting).
    Warn,
    /// Failed or aborted.
    Bad,
    /// Moving.
    Busy,
    /// Secondary text.
    Dim,
}

/// Whether to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// True when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub colour: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is not set (https://no-color.org).
    pub fn for_stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: std::io::stdout().is_terminal() && !no_color,
        }
    }

    /// No colour at all.
    #[cfg(test)]
    pub fn plain() -> Style {
        Style { colour: false }
    }

    /// `text` in `tone` (unchanged without colour).
    pub fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.colour || text.is_empty() {
            return text.to_owned();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Busy => "36",
            Tone::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// The number of characters a cell shows (colour codes take no room).
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        if in_escape {
            if c == 'm' {
                in_escape = false;
            }
        } else if c == '\x1b' {
            in_escape = true;
        } else {
            width += 1;
        }
    }
    width
}

/// Rows laid out in columns three spaces apart, each line indented by `indent`; the last
/// column is not padded.
pub fn table(indent: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(visible_width(cell));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        out.push_str(indent);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            line.push_str(cell);
            if i + 1 < columns {
                let pad = widths[i] - visible_width(cell) + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds as kubectl shows an age: `45s`, `3m12s`, `12m`, `2h5m`, `5h`, `3d4h`, `12d`.
pub fn human_seconds(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => {
            let (h, m) = (s / 3600, (s % 3600) / 60);
            if h == 0 {
                format!("{m}m")
            } else {
                format!("{h}h{m}m")
            }
        }
        10_800..172_800 => format!("{}h", s / 3600),
        172_800..691_200 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The age of `t` at `now` (`-` when absent).
pub fn age(t: Option<&Time>, now: Timestamp) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| human_seconds(now.as_second() - t.0.as_second()),
    )
}

/// How far `t` is in the future at `now`: `in 5m` (or the age with `ago` when past).
pub fn until(t: &Time, now: Timestamp) -> String {
    let delta = t.0.as_second() - now.as_second();
    if delta >= 0 {
        format!("in {}", human_seconds(delta))
    } else {
        format!("{} ago", human_seconds(-delta))
    }
}

/// Device text with every kind of character a terminal acts on: an OSC title change ended by
/// a bell, clear-screen, a carriage return, a bidi override, zero-width and BOM characters, a
/// C1 CSI (tests).
#[cfg(test)]
pub const HOSTILE: &str =
    "\u{1b}]0;pwned\u{7}\u{1b}[2J\rspoofed\u{202e}gnp.exe\u{200b}\u{9b}1m\u{feff}\u{7f}";

/// Panics unless `text` holds no control or invisible character but newlines and, with
/// colour, the plugin's own colour codes (`ESC [ <digits> m`) (tests).
#[cfg(test)]
pub fn assert_terminal_safe(text: &str, style: &Style) {
    let mut rest = text;
    let mut plain = String::new();
    while let Some(at) = rest.find('\x1b') {
        plain.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let code = after
            .strip_prefix('[')
            .and_then(|a| a.find('m').map(|end| &a[..end]))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        match code {
            Some(digits) if style.colour => rest = &after[digits.len() + 2..],
            _ => panic!(
                "raw ESC at byte {} of:\n{text}",
                text.len() - rest.len() + at
            ),
        }
    }
    plain.push_str(rest);
    if let Some(bad) = plain
        .chars()
        .find(|&c| c != '\n' && crate::otau::needs_escape(c))
    {
        panic!("raw {bad:?} in:\n{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_seconds(-3), "0s");
        assert_eq!(human_seconds(45), "45s");
        assert_eq!(human_seconds(192), "3m12s");
        assert_eq!(human_seconds(720), "12m");
        assert_eq!(human_seconds(7_500), "2h5m");
        assert_eq!(human_seconds(18_000), "5h");
        assert_eq!(human_seconds(273_600), "3d4h");
        assert_eq!(human_seconds(1_036_800), "12d");
    }

    #[test]
    fn tables_align_ignoring_colour() {
        let style = Style { colour: true };
        let rows = vec![
            vec![style.paint(Tone::Good, "ok"), "1".into()],
            vec!["longer".into(), "22".into()],
        ];
        let text = table("  ", &["NAME", "N"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  NAME     N");
        assert_eq!(lines[1], "  \x1b[32mok\x1b[0m       1");
        assert_eq!(lines[2], "  longer   22");
        assert_eq!(Style::plain().paint(Tone::Bad, "x"), "x");
    }
}
