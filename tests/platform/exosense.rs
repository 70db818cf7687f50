//! The ExoSense token check (exosite-platform.md §7.1): one `{ __typename }` GraphQL query with
//! `Authorization: Automation <token>`, over loopback HTTP against the emulator.

use otau_operator::platform::{Platform, PlatformError};

use crate::harness::{Emu, MTOKEN, XTOKEN};

const WRONG: &str = "0000e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";

#[tokio::test]
async fn the_right_exosense_token_is_accepted_with_one_graphql_query() {
    let emu = Emu::start().await;
    let client = emu.client_with(emu.config_with_exosense_token(XTOKEN), None);
    assert_eq!(client.check_exosense_credentials().await, Ok(true));
    let graphql: Vec<_> = emu
        .log()
        .into_iter()
        .filter(|l| l.path == "/api/graphql")
        .collect();
    assert_eq!(graphql.len(), 1, "{graphql:?}");
    assert_eq!(
        (graphql[0].method.as_str(), graphql[0].status),
        ("POST", 200)
    );
}

#[tokio::test]
async fn a_wrong_exosense_token_is_an_authentication_error_naming_the_check() {
    let emu = Emu::start().await;
    let client = emu.client_with(emu.config_with_exosense_token(WRONG), None);
    let err = client
        .check_exosense_credentials()
        .await
        .expect_err("the emulator refuses the token");
    assert!(
        matches!(
            &err,
            PlatformError::Authentication {
                operation: "exosense.credentials.check",
                status: 401,
                ..
            }
        ),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(WRONG) && !text.contains(MTOKEN), "{text}");
    }
    assert!(
        emu.log()
            .iter()
            .any(|l| l.path == "/api/graphql" && l.status == 401)
    );
    // The management token is still fine: only ExoSense refused.
    assert!(client.check_credentials().await.is_ok());
}

#[tokio::test]
async fn without_exosense_nothing_is_checked() {
    let emu = Emu::start().await;
    let client = emu.client();
    assert_eq!(client.check_exosense_credentials().await, Ok(false));
    assert!(emu.log().iter().all(|l| l.path != "/api/graphql"));
}
