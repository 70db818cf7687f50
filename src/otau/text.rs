//! Text that a device or the platform wrote (identities, `otau_in` messages, error bodies),
//! made safe to show: the one place that decides which characters are escaped and how long
//! such text may be.
//!
//! A device controls its identity and every byte of its `otau_in` message. Printed raw, an
//! escape sequence (`ESC [ 2 J`) clears or rewrites an operator's terminal, a bell rings, a
//! carriage return overwrites the start of a line with something else, and a bidi override
//! (U+202E) makes the rest of the line read backwards. The operator runs device text through
//! [`safe_text`] before it lands in a Rollout's status, an Event or a condition, and
//! `kubectl otau` does so again on output (an object may hold raw text from an older release
//! or from another writer).

/// What [`safe_text`] appends when it cuts text: one character, three bytes in UTF-8.
pub const ELLIPSIS: char = '…';

/// Whether `c` is escaped by [`safe_text`]: every control character (C0 `U+0000`–`U+001F`,
/// DEL `U+007F`, C1 `U+0080`–`U+009F`), and the invisible formatting characters that change
/// how the text around them reads: the soft hyphen, the Arabic letter mark, the Mongolian
/// vowel separator, zero-width space and joiners, the left-to-right and right-to-left marks
/// (`U+200B`–`U+200F`), the line and paragraph separators (`U+2028`, `U+2029`), the bidi
/// embeddings, overrides and isolates (`U+202A`–`U+202E`, `U+2066`–`U+2069`), the other
/// invisible operators and deprecated format characters (`U+2060`–`U+206F`), the byte-order
/// mark (`U+FEFF`), the interlinear annotation characters (`U+FFF9`–`U+FFFB`) and the tag
/// characters (`U+E0000`–`U+E007F`).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{AD}'
                | '\u{61C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Whether `text` holds no character [`needs_escape`] selects.
pub fn is_safe_text(text: &str) -> bool {
    !text.chars().any(needs_escape)
}

/// Appends `c` to `out` as it is shown: itself, or a visible escape (`\n`, `\r`, `\t`,
/// otherwise `\u{1b}` with the code point in lowercase hex) when [`needs_escape`] selects it.
fn push_shown(out: &mut String, c: char) {
    if !needs_escape(c) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        other => {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{{{:x}}}", u32::from(other));
        }
    }
}

/// `text` made safe to show and store: every character [`needs_escape`] selects is written
/// as a visible escape (`\u{1b}`, `\u{202e}`, `\n`, ...; a backslash is left as it is), and
/// the result is at most `max_bytes` bytes of UTF-8. Longer text is cut at a character (never
/// inside an escape) and ends with [`ELLIPSIS`]; with `max_bytes` below the ellipsis' three
/// bytes, cut text is empty.
pub fn safe_text(text: &str, max_bytes: usize) -> String {
    let room = max_bytes.saturating_sub(ELLIPSIS.len_utf8());
    let mut out = String::with_capacity(text.len().min(max_bytes));
    // The length of `out` at the last character boundary that leaves room for the ellipsis.
    let mut cut = 0;
    for c in text.chars() {
        push_shown(&mut out, c);
        if out.len() > max_bytes {
            out.truncate(cut);
            if max_bytes >= ELLIPSIS.len_utf8() {
                out.push(ELLIPSIS);
            }
            return out;
        }
        if out.len() <= room {
            cut = out.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_and_invisible_characters_are_shown_as_escapes() {
        assert_eq!(
            safe_text("\u{1b}[2J\u{7}\rok\n\tend", 100),
            "\\u{1b}[2J\\u{7}\\rok\\n\\tend"
        );
        assert_eq!(
            safe_text("a\u{202e}b\u{2066}c\u{200b}d\u{feff}e\u{7f}f\u{9b}g", 100),
            "a\\u{202e}b\\u{2066}c\\u{200b}d\\u{feff}e\\u{7f}f\\u{9b}g"
        );
        assert_eq!(safe_text("tag\u{e0041}", 100), "tag\\u{e0041}");
        // Ordinary text, accents, CJK, emoji and backslashes are kept as they are.
        let plain = r"checksum mismatch: C:\fw\é 固件 ✔ 🚀";
        assert_eq!(safe_text(plain, 100), plain);
        assert!(is_safe_text(plain));
        assert!(!is_safe_text("bell\u{7}"));
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis_and_never_inside_an_escape() {
        assert_eq!(safe_text("abcdef", 6), "abcdef");
        assert_eq!(safe_text("abcdefg", 6), "abc…");
        assert_eq!(safe_text("ééééé", 9), "ééé…");
        // `ab\u{1b}` is 8 bytes: the escape does not fit before the ellipsis, so it goes whole.
        assert_eq!(safe_text("ab\u{1b}cdefgh", 10), "ab…");
        assert_eq!(safe_text("abcdef", 2), "");
        assert_eq!(safe_text("", 0), "");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever the device wrote: nothing left to escape, within the bound, and when cut,
        /// a prefix of the whole escaped text followed by the ellipsis.
        #[test]
        fn safe_text_is_safe_bounded_and_cut_only_when_too_long(text in any::<String>(), max in 0usize..300) {
            let shown = safe_text(&text, max);
            prop_assert!(is_safe_text(&shown), "{shown:?}");
            prop_assert!(shown.len() <= max, "{} > {max}", shown.len());
            let whole = safe_text(&text, usize::MAX);
            if whole.len() <= max {
                prop_assert_eq!(&shown, &whole);
            } else if max >= ELLIPSIS.len_utf8() {
                let kept = shown.strip_suffix(ELLIPSIS).unwrap_or_default();
                prop_assert!(shown.ends_with(ELLIPSIS) && whole.starts_with(kept), "{shown:?}");
            } else {
                prop_assert_eq!(shown, "");
            }
            if is_safe_text(&text) {
                prop_assert_eq!(whole, text);
            }
        }
    }
}
