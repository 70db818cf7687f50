use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn strict() -> OutboundPolicy {
    OutboundPolicy::default()
}

/// A server on 127.0.0.1:0 answering `/redirect` with a 302 to `/target`, `/target` with
/// "target", and `/big` with `big` bytes; its base URL.
async fn server(big: usize) -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/redirect",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, "/target?secret=location")],
                    "",
                )
            }),
        )
        .route("/target", get(|| async { "target" }))
        .route("/big", get(move || async move { vec![b'x'; big] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[test]
fn non_public_addresses_are_refused() {
    for bad in [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.0.8",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "64:ff9b::a9fe:a9fe",
        "2001:db8::1",
    ] {
        assert!(refusal(ip(bad)).is_some(), "{bad} must be refused");
    }
}

#[test]
fn public_addresses_pass() {
    for good in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ] {
        assert_eq!(refusal(ip(good)), None, "{good} must pass");
    }
}

#[test]
fn urls_with_addresses_are_checked_without_dns() {
    let url = |s: &str| url::Url::parse(s).unwrap();
    for refused in [
        "http://127.0.0.1:8080/api:1/",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/",
        // The decimal form is an IPv4 address to the URL parser too.
        "http://2130706433/",
    ] {
        let e = strict().check_url(&url(refused)).unwrap_err();
        assert!(
            matches!(&e, OutboundError::Refused(m) if m.contains(ALLOW_PRIVATE_FLAG) && m.contains(PLATFORM_HOST_FLAG)),
            "{refused}: {e}"
        );
    }
    assert!(strict().check_url(&url("https://8.8.8.8/")).is_ok());
    assert!(strict().check_url(&url("ftp://example.com/")).is_err());
    let open = OutboundPolicy::new(true, [""; 0]).unwrap();
    assert!(open.check_url(&url("http://127.0.0.1:8080/")).is_ok());
    let trusted = OutboundPolicy::new(false, ["127.0.0.1"]).unwrap();
    assert!(trusted.check_url(&url("http://127.0.0.1:8080/")).is_ok());
    assert!(trusted.check_url(&url("http://127.0.0.2:8080/")).is_err());
}

#[test]
fn the_allow_list_takes_bare_hosts_only() {
    let policy = OutboundPolicy::new(false, ["Bizapi.Hosted.Exosite.IO.", "10.1.2.3"]).unwrap();
    assert!(policy.is_trusted_host("bizapi.hosted.exosite.io"));
    assert!(policy.is_trusted_host("10.1.2.3"));
    assert!(!policy.is_trusted_host("hosted.exosite.io"));
    for bad in ["https://bizapi.hosted.exosite.io", "host:443", "a/b"] {
        let e = OutboundPolicy::new(false, [bad]).unwrap_err();
        assert!(e.contains(PLATFORM_HOST_FLAG) && e.contains(bad), "{e}");
    }
}

#[tokio::test]
async fn names_are_checked_at_resolution() {
    let e = strict().resolve("localhost", 80).await.unwrap_err();
    assert!(
        matches!(&e, OutboundError::Refused(m) if m.contains("localhost resolves to") && m.contains("loopback")),
        "{e}"
    );
    let trusted = OutboundPolicy::new(false, ["localhost"]).unwrap();
    assert!(!trusted.resolve("localhost", 80).await.unwrap().is_empty());
    let e = strict()
        .resolve("no-such-host.invalid", 443)
        .await
        .unwrap_err();
    assert!(matches!(e, OutboundError::Unresolvable(_)), "{e}");
}

#[tokio::test]
async fn the_client_refuses_a_name_that_resolves_to_a_private_address() {
    let base = server(0).await;
    let port = url::Url::parse(&base).unwrap().port().unwrap();
    // "localhost" passes check_url (a name) and is refused by the client's resolver.
    let client = strict().client_builder().build().unwrap();
    let e = client
        .get(format!("http://localhost:{port}/target"))
        .send()
        .await
        .unwrap_err();
    let chain = {
        let mut parts = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        parts.join(": ")
    };
    assert!(chain.contains("loopback"), "{chain}");
    // The same request passes under an allow-list naming the host.
    let trusted = OutboundPolicy::new(false, ["localhost"]).unwrap();
    let ok = trusted
        .client_builder()
        .build()
        .unwrap()
        .get(format!("http://localhost:{port}/target"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let base = server(0).await;
    let client = OutboundPolicy::new(true, [""; 0])
        .unwrap()
        .client_builder()
        .build()
        .unwrap();
    let response = client.get(format!("{base}/redirect")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let body = read_capped(response, 1024).await.unwrap();
    assert!(body.is_empty(), "the target was not fetched");
}

#[tokio::test]
async fn bodies_stop_at_the_cap() {
    let base = server(100_000).await;
    let client = OutboundPolicy::new(true, [""; 0])
        .unwrap()
        .client_builder()
        .build()
        .unwrap();
    let get = || client.get(format!("{base}/big")).send();
    let full = read_capped(get().await.unwrap(), 100_000).await.unwrap();
    assert_eq!(full.len(), 100_000);
    let e = read_capped(get().await.unwrap(), 99_999).await.unwrap_err();
    assert!(matches!(e, BodyError::TooLarge { cap: 99_999 }), "{e}");
}
