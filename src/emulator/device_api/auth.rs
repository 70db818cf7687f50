//! Device credentials from request headers (exosite-platform.md §3.2).

use axum::http::{HeaderMap, header};
use base64::Engine;

use crate::emulator::model::DeviceCredential;

/// Credentials in the headers, as owned strings: `X-Exosite-CIK`, `Authorization: token <t>`,
/// `Authorization: Basic base64(":" + token)` or `Basic base64(identity:password)`.
pub fn credential_from_headers(headers: &HeaderMap) -> Option<OwnedCredential> {
    if let Some(cik) = headers.get("x-exosite-cik").and_then(|v| v.to_str().ok()) {
        return Some(OwnedCredential::Token(cik.trim().to_string()));
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("token") {
        return Some(OwnedCredential::Token(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (user, password) = raw.split_once(':')?;
        return Some(if user.is_empty() {
            OwnedCredential::Token(password.to_string())
        } else {
            OwnedCredential::Password {
                identity: user.to_string(),
                password: password.to_string(),
            }
        });
    }
    None
}

/// Owned form of [`DeviceCredential`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedCredential {
    /// A device token.
    Token(String),
    /// Identity and password.
    Password {
        /// Identity.
        identity: String,
        /// Password.
        password: String,
    },
}

impl OwnedCredential {
    /// Borrowed view for [`crate::emulator::model::Connector::authenticate`].
    pub fn as_credential(&self) -> DeviceCredential<'_> {
        match self {
            OwnedCredential::Token(t) => DeviceCredential::Token(t),
            OwnedCredential::Password { identity, password } => {
                DeviceCredential::Password { identity, password }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn every_documented_form_is_read() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            credential_from_headers(&with("x-exosite-cik", "t1")),
            Some(OwnedCredential::Token("t1".into()))
        );
        assert_eq!(
            credential_from_headers(&with("authorization", "token t2")),
            Some(OwnedCredential::Token("t2".into()))
        );
        assert_eq!(
            credential_from_headers(&with("authorization", &format!("basic {}", b64(":t3")))),
            Some(OwnedCredential::Token("t3".into()))
        );
        assert_eq!(
            credential_from_headers(&with("authorization", &format!("Basic {}", b64("id:pw")))),
            Some(OwnedCredential::Password {
                identity: "id".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            credential_from_headers(&with("authorization", "Bearer x")),
            None
        );
        assert_eq!(credential_from_headers(&HeaderMap::new()), None);
    }
}
