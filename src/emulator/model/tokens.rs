//! Management API tokens (exosite-platform.md §5.1): tokens configured up front, and tokens
//! issued by login with a TTL of 172800 s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Clock, MANAGEMENT_TOKEN_TTL_SECS, random_token};

/// An account that may log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Login e-mail.
    pub email: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What `GET /api:1/token/<t>` returns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Owner of the token.
    pub email: String,
    /// Remaining lifetime in seconds.
    pub ttl: i64,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    email: String,
    /// µs; `None` for configured tokens, which never expire.
    expires: Option<i64>,
}

/// The management tokens the model accepts.
pub struct ManagementTokens {
    tokens: RwLock<HashMap<String, TokenEntry>>,
    accounts: Vec<Account>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ManagementTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementTokens").finish_non_exhaustive()
    }
}

/// The owner named for configured tokens.
pub const CONFIGURED_TOKEN_EMAIL: &str = "emulator@localhost";

impl ManagementTokens {
    pub(crate) fn new(
        configured: Vec<String>,
        accounts: Vec<Account>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let tokens = configured
            .into_iter()
            .map(|t| {
                (
                    t,
                    TokenEntry {
                        email: CONFIGURED_TOKEN_EMAIL.into(),
                        expires: None,
                    },
                )
            })
            .collect();
        ManagementTokens {
            tokens: RwLock::new(tokens),
            accounts,
            clock,
        }
    }

    /// Logs in: a new 40-character token valid for 172800 s, or `None` for unknown credentials.
    pub fn login(&self, email: &str, password: &str) -> Option<String> {
        let ok = self
            .accounts
            .iter()
            .any(|a| a.email == email && a.password == password);
        if !ok {
            return None;
        }
        let token = random_token();
        let expires = self.clock.now_micros() + MANAGEMENT_TOKEN_TTL_SECS * 1_000_000;
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                TokenEntry {
                    email: email.to_string(),
                    expires: Some(expires),
                },
            );
        Some(token)
    }

    /// Adds a token that never expires.
    pub fn add_configured(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.to_string(),
                TokenEntry {
                    email: CONFIGURED_TOKEN_EMAIL.into(),
                    expires: None,
                },
            );
    }

    /// Owner and remaining lifetime of a valid token.
    pub fn check(&self, token: &str) -> Option<TokenInfo> {
        let now = self.clock.now_micros();
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let entry = tokens.get(token)?;
        let ttl = match entry.expires {
            None => MANAGEMENT_TOKEN_TTL_SECS,
            Some(exp) if exp > now => (exp - now + 999_999).div_euclid(1_000_000),
            Some(_) => return None,
        };
        Some(TokenInfo {
            email: entry.email.clone(),
            ttl,
        })
    }

    /// Whether `token` is valid now.
    pub fn is_valid(&self, token: &str) -> bool {
        self.check(token).is_some()
    }

    /// Revokes a token; false if it was not known.
    pub fn revoke(&self, token: &str) -> bool {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn login_tokens_expire_after_the_ttl_and_can_be_revoked() {
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let t = ManagementTokens::new(
            vec!["fixed".into()],
            vec![Account {
                email: "a@b.c".into(),
                password: "pw".into(),
            }],
            clock.clone(),
        );
        assert!(t.login("a@b.c", "wrong").is_none());
        let tok = t.login("a@b.c", "pw").unwrap();
        assert_eq!(tok.len(), 40);
        assert_eq!(t.check(&tok).unwrap().ttl, 172_800);
        clock.advance(Duration::from_secs(172_800));
        assert!(t.check(&tok).is_none());
        assert!(t.is_valid("fixed"));
        assert!(t.revoke("fixed"));
        assert!(!t.is_valid("fixed"));
    }
}
