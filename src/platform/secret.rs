//! Credentials that must never reach a log, an error message or a status field.

use std::fmt;

/// A bearer credential (management API token, ExoSense Automation token).
///
/// `Debug` and `Display` print `[redacted]`; the value is only reachable through
/// [`SecretToken::expose_secret`], which is called in one place: where the `Authorization`
/// header (or the token-check URL) is built.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Wraps a token, trimming surrounding whitespace (Secrets often end with a newline).
    pub fn new(token: impl Into<String>) -> Self {
        SecretToken(token.into().trim().to_string())
    }

    /// The token text. Only for building a request; never log or format it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// True when the token is empty (a Secret key that holds nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Replaces every occurrence of each token in `text` with `[redacted]` (for server messages
/// that might echo a request back).
pub(crate) fn redact(text: &str, tokens: &[&SecretToken]) -> String {
    let mut out = text.to_string();
    for token in tokens {
        if !token.is_empty() {
            out = out.replace(token.expose_secret(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_token() {
        let t = SecretToken::new("0123456789abcdef0123456789abcdef01234567\n");
        assert_eq!(format!("{t:?}"), "[redacted]");
        assert_eq!(format!("{t}"), "[redacted]");
        assert_eq!(
            t.expose_secret(),
            "0123456789abcdef0123456789abcdef01234567"
        );
    }

    #[test]
    fn redact_replaces_echoed_tokens() {
        let t = SecretToken::new("s3cr3t");
        assert_eq!(
            redact("bad token s3cr3t here", &[&t]),
            "bad token [redacted] here"
        );
        assert_eq!(redact("x", &[&SecretToken::new("")]), "x");
    }
}
