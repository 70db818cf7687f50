//! The platform client under the outbound policy (docs/security.md §2, §3): refused
//! destinations are never contacted, redirects are not followed, answers stop at their cap,
//! and what the platform writes in an error answer stays out of the error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use otau_operator::net::outbound::OutboundPolicy;
use otau_operator::platform::{ExositePlatform, ListIdentities, Platform, PlatformError};

use crate::harness::{Emu, MTOKEN};

/// A server on 127.0.0.1:0 that answers every request with `answer`; its base URL.
async fn serve(answer: axum::routing::MethodRouter) -> String {
    let app = axum::Router::new().fallback(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test]
async fn a_private_destination_is_refused_before_any_request() {
    let emu = Emu::start().await;
    // The address in the URL: refused when the client is built.
    let mut config = emu.config(MTOKEN);
    config.outbound = OutboundPolicy::default();
    let refused = ExositePlatform::new(config, None).expect_err("a loopback URL");
    assert!(
        refused
            .to_string()
            .contains("127.0.0.1 is a loopback address"),
        "{refused}"
    );
    // A name that resolves to it: refused when the client resolves it.
    let mut config = emu.config(MTOKEN);
    config.outbound = OutboundPolicy::default();
    config.management_url = url::Url::parse(
        &emu.management_url()
            .as_str()
            .replace("127.0.0.1", "localhost"),
    )
    .expect("url");
    let client = ExositePlatform::new(config, None).expect("a name passes the build");
    let error = client.check_credentials().await.expect_err("refused");
    assert!(
        matches!(&error, PlatformError::Unavailable { reason, .. } if reason.contains("loopback")),
        "{error}"
    );
    assert!(emu.log().is_empty(), "{:?}", emu.log());
}

#[tokio::test]
async fn a_redirect_is_an_error_naming_the_status_not_the_location() {
    let emu = Emu::start().await;
    let target = format!("{}/api:1/token/{MTOKEN}?where=secret-location", emu.base);
    let redirector = serve(axum::routing::any(move || {
        let target = target.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
                "",
            )
        }
    }))
    .await;
    let mut config = emu.config(MTOKEN);
    config.management_url = url::Url::parse(&format!("{redirector}/api:1/")).expect("url");
    let client = ExositePlatform::new(config, None).expect("client");
    let error = client.check_credentials().await.expect_err("a redirect");
    assert!(
        matches!(error, PlatformError::Rejected { status: 307, .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("redirect") && !text.contains("secret-location"),
        "{text}"
    );
    assert!(
        emu.log().is_empty(),
        "the redirect was followed: {:?}",
        emu.log()
    );
}

#[tokio::test]
async fn an_answer_over_its_cap_stops_being_read_at_the_cap() {
    const CHUNK: usize = 64 * 1024;
    const SERVED: u64 = 256 * 1024 * 1024;
    let emu = Emu::start().await;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // An endless-looking listing page: 256 MiB of JSON-ish bytes, counted as they go out.
    let huge = serve(axum::routing::any(move || {
        let counter = counter.clone();
        async move {
            let chunks = futures::stream::iter(0..SERVED / CHUNK as u64).map(move |_| {
                counter.fetch_add(CHUNK as u64, Ordering::Relaxed);
                Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; CHUNK]))
            });
            axum::body::Body::from_stream(chunks)
        }
    }))
    .await;
    let mut config = emu.config(MTOKEN);
    config.management_url = url::Url::parse(&format!("{huge}/api:1/")).expect("url");
    config.max_page_bytes = 1024 * 1024;
    let client = ExositePlatform::new(config, None).expect("client");
    let mut pages = client.list_identities(ListIdentities::default());
    let error = pages
        .next()
        .await
        .expect("one item")
        .expect_err("over the cap");
    assert!(
        matches!(&error, PlatformError::InvalidResponse { message, .. } if message.contains("larger than 1048576 bytes")),
        "{error}"
    );
    drop(pages);
    drop(client);
    // The server stopped when the client let go: far less than it had to send (socket
    // buffers hold a few MiB at most).
    let total = sent.load(Ordering::Relaxed);
    assert!(total < 32 * 1024 * 1024, "the client read {total} bytes");
}

#[tokio::test]
async fn what_the_platform_writes_in_an_error_stays_out_of_the_error() {
    let emu = Emu::start().await;
    let client = emu.client_with(emu.config("0000deadbeef0000deadbeef0000deadbeef0000"), None);
    let error = client.check_credentials().await.expect_err("401");
    let text = error.to_string();
    assert!(
        text.contains("HTTP 401") && !text.contains("invalid or expired token"),
        "{text}"
    );
}
