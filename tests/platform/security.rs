//! Credentials: rejected tokens, the 401 re-read hook, redaction; the User-Agent; metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use otau_operator::platform::{
    AuthScheme, CredentialsProvider, ListIdentities, Platform, PlatformError, PlatformMetrics,
    SecretToken,
};

use crate::harness::{Emu, MTOKEN, expected_user_agent};

const BAD: &str = "0000deadbeef0000deadbeef0000deadbeef0000";

/// A wrong token: every call is an `Authentication` error; neither its Display nor its Debug
/// shows the token (the token check puts it in the URL path).
#[tokio::test]
async fn bad_token_is_authentication_and_never_printed() {
    let emu = Emu::start().await;
    let client = emu.client_with(emu.config(BAD), None);
    let mut errors = vec![
        client.check_credentials().await.expect_err("401"),
        client.identity_state("x").await.expect_err("401"),
        client.content_info("x").await.expect_err("401"),
    ];
    use futures::StreamExt;
    let mut pages = client.list_identities(ListIdentities::default());
    errors.push(pages.next().await.expect("one item").expect_err("401"));
    for err in &errors {
        assert!(
            matches!(err, PlatformError::Authentication { status: 401, .. }),
            "{err:?}"
        );
        assert!(!err.is_transient());
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(BAD), "token leaked: {text}");
            assert!(!text.contains(MTOKEN), "token leaked: {text}");
        }
    }
    // Config and client Debug output hide tokens too.
    let debug = format!("{:?} {:?}", emu.config(BAD), client);
    assert!(!debug.contains(BAD), "{debug}");
    assert_eq!(format!("{:?}", SecretToken::new(BAD)), "[redacted]");
}

/// Starts with a stale token, and hands out the good one when asked to re-read.
struct Rotating {
    reloads: AtomicUsize,
}

#[async_trait]
impl CredentialsProvider for Rotating {
    async fn current(&self) -> Result<SecretToken, PlatformError> {
        Ok(SecretToken::new(BAD))
    }
    async fn reload(&self) -> Result<SecretToken, PlatformError> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        Ok(SecretToken::new(MTOKEN))
    }
}

/// On a 401 the client re-reads the credentials once and retries with the new token.
#[tokio::test]
async fn a_401_re_reads_credentials_once() {
    let emu = Emu::start().await;
    let provider = Arc::new(Rotating {
        reloads: AtomicUsize::new(0),
    });
    let mut config = emu.config(BAD);
    config.credentials = provider.clone();
    let client = emu.client_with(config, None);
    let check = client
        .check_credentials()
        .await
        .expect("works after re-read");
    assert!(check.ttl.as_secs() > 0);
    assert!(provider.reloads.load(Ordering::SeqCst) >= 1);
    let statuses: Vec<u16> = emu.log().iter().map(|l| l.status).collect();
    assert_eq!(statuses.first(), Some(&401));
    assert!(statuses.contains(&200));
}

/// The `Bearer` scheme is sent as configured (the emulator only knows `token`, so it refuses).
#[tokio::test]
async fn bearer_scheme_is_configurable() {
    let emu = Emu::start().await;
    let mut config = emu.config(MTOKEN);
    config.auth_scheme = AuthScheme::Bearer;
    let err = emu
        .client_with(config, None)
        .identity_state("x")
        .await
        .expect_err("the emulator accepts the token scheme only");
    assert_eq!(err.metric_label(), "authentication");
}

/// Every request carries `otau-operator/<version> (<instance>)`, object-store posts included.
#[tokio::test]
async fn user_agent_reaches_the_emulator() {
    let emu = Emu::start().await;
    let client = emu.client();
    client.check_credentials().await.expect("check");
    client
        .upload_content(otau_operator::platform::ContentUpload {
            id: "ua.txt".into(),
            content_type: "text/plain".into(),
            length: 2,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"ok")),
            tags: Default::default(),
            body: Box::pin(&b"ok"[..]),
        })
        .await
        .expect("upload");
    let log = emu.log();
    assert!(log.len() >= 4);
    for l in &log {
        assert_eq!(
            l.user_agent,
            expected_user_agent(),
            "{} {}",
            l.method,
            l.path
        );
    }
}

/// Metrics count attempts per route name and outcome; labels never hold ids.
#[tokio::test]
async fn metrics_per_operation_and_outcome() {
    let emu = Emu::start().await;
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(PlatformMetrics::register(&registry).expect("register"));
    let client = emu.client_with(emu.config(MTOKEN), Some(metrics.clone()));
    client.check_credentials().await.expect("check");
    let _ = client.identity_state("secret-device-id").await;
    assert_eq!(
        metrics
            .requests
            .with_label_values(&["token.check", "success"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .requests
            .with_label_values(&["device2.state.get", "not_found"])
            .get(),
        1
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    assert!(text.contains("otau_platform_request_duration_seconds"));
    assert!(!text.contains("secret-device-id"));
    assert!(!text.contains(MTOKEN));
}
