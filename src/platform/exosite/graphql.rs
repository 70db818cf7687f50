//! ExoSense `createContent` (exosite-platform.md §7.2) through graphql_client's derive: the
//! types come from `src/platform/create_content.graphql` checked against the schema subset in
//! `src/platform/exosense.graphql`; our own reqwest client sends the body.
//!
//! The token check is `query CredentialCheck { __typename }`: valid against any GraphQL schema
//! (so it needs none of the undocumented ExoSense queries), answered without touching data,
//! and still authenticated (§7.1: a missing or wrong token gets `401`).

use graphql_client::{GraphQLQuery, Response};
use reqwest::Method;

use super::transport::{AuthKind, Call, Target};
use super::upload::{self, UploadForm};
use super::{EMPTY_SHA256, ExositePlatform, operation, wire};
use crate::platform::error::PlatformError;
use crate::platform::types::{ContentUpload, PackageRegistration};

/// The `Json` scalar of the schema.
type Json = serde_json::Value;

/// The documented `createContent` mutation.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/platform/exosense.graphql",
    query_path = "src/platform/create_content.graphql",
    response_derives = "Debug",
    variables_derives = "Debug"
)]
struct CreateContentGQL;

use create_content_gql as gql;

/// The variables for the package item: the tags of §7.2 (`total-devices` as a number, as the
/// OTA guide sends it), `content_type`/`type` `firmware`, length 0.
fn variables(
    connector_id: &str,
    package: &PackageRegistration,
) -> Result<gql::Variables, PlatformError> {
    let mut tags = vec![
        tag("otau_info", Json::String(upload::otau_info(package)?)),
        tag("pid", Json::String(connector_id.to_string())),
        tag("total-devices", Json::from(package.total_devices)),
    ];
    tags.extend(package.device_tags.iter().map(|identity| {
        tag(
            &format!("{connector_id}.{identity}"),
            Json::String("1".into()),
        )
    }));
    Ok(gql::Variables {
        content: Some(gql::ContentInput {
            name: package.content_id(),
            content_type: Some("firmware".to_string()),
            type_: Some("firmware".to_string()),
            length: Some(0),
            tags: Some(tags),
            product_id: Some(connector_id.to_string()),
        }),
    })
}

fn tag(name: &str, value: Json) -> Option<gql::TagInput> {
    Some(gql::TagInput {
        name: name.to_string(),
        value: Some(value),
    })
}

/// The token-check document: the cheapest query every GraphQL schema answers.
pub(super) const CHECK_QUERY: &str = "query CredentialCheck { __typename }";

/// The ExoSense configuration, or an error naming `op` when the connector has none.
fn exosense_config<'a>(
    platform: &'a ExositePlatform,
    op: &'static str,
) -> Result<&'a crate::platform::ExoSenseConfig, PlatformError> {
    platform
        .inner
        .config
        .exosense
        .as_ref()
        .ok_or(PlatformError::InvalidRequest {
            operation: op,
            message: "ExoSense is not configured for this connector".to_string(),
        })
}

/// Turns GraphQL `errors` into [`PlatformError::Rejected`] (counted; their text is logged at
/// debug level only).
fn graphql_errors(
    op: &'static str,
    status: u16,
    errors: Option<Vec<graphql_client::Error>>,
) -> Result<(), PlatformError> {
    match errors.filter(|e| !e.is_empty()) {
        None => Ok(()),
        Some(errors) => {
            // What the platform wrote goes to the debug log only, never into the error.
            let said = errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::debug!(operation = op, platform_says = %super::transport::shorten(&said), "GraphQL errors");
            Err(PlatformError::Rejected {
                operation: op,
                status,
                message: format!("the GraphQL answer holds {} error(s)", errors.len()),
            })
        }
    }
}

/// Sends [`CHECK_QUERY`] with the ExoSense token. A wrong token comes back as
/// [`PlatformError::Authentication`] (after the transport's one re-read of the Secret).
pub(super) async fn check_token(platform: &ExositePlatform) -> Result<(), PlatformError> {
    let op = operation::EXOSENSE_CHECK;
    let exosense = exosense_config(platform, op)?;
    let body = serde_json::json!({"query": CHECK_QUERY, "operationName": "CredentialCheck"});
    let call = Call {
        operation: op,
        method: Method::POST,
        target: Target::Absolute(exosense.graphql_url.clone()),
        body: Some(body.to_string().into()),
        idempotent: true,
        auth: AuthKind::ExoSense,
    };
    let answer = platform.inner.execute(&call).await?;
    let response: Response<serde_json::Value> = wire::parse(op, &answer.body)?;
    graphql_errors(op, answer.status.as_u16(), response.errors)?;
    match response.data.as_ref().and_then(|d| d.get("__typename")) {
        Some(serde_json::Value::String(_)) => Ok(()),
        _ => Err(PlatformError::InvalidResponse {
            operation: op,
            message: "the answer to { __typename } has no data.__typename".to_string(),
        }),
    }
}

/// Registers the package item through ExoSense, then posts its empty body with the returned
/// form.
pub(super) async fn register(
    platform: &ExositePlatform,
    package: &PackageRegistration,
) -> Result<(), PlatformError> {
    let op = operation::CREATE_CONTENT;
    let exosense = exosense_config(platform, op)?;
    let query =
        CreateContentGQL::build_query(variables(&platform.inner.config.connector_id, package)?);
    let body = serde_json::to_value(&query).map_err(|e| PlatformError::InvalidRequest {
        operation: op,
        message: format!("cannot encode the GraphQL request: {e}"),
    })?;
    let call = Call {
        operation: op,
        method: Method::POST,
        target: Target::Absolute(exosense.graphql_url.clone()),
        body: Some(body.to_string().into()),
        // Registering an existing name replaces it (§7.2), so a retry is harmless.
        idempotent: true,
        auth: AuthKind::ExoSense,
    };
    let answer = platform.inner.execute(&call).await?;
    let response: Response<gql::ResponseData> = wire::parse(op, &answer.body)?;
    graphql_errors(op, answer.status.as_u16(), response.errors)?;
    let created =
        response
            .data
            .and_then(|d| d.create_content)
            .ok_or(PlatformError::InvalidResponse {
                operation: op,
                message: "createContent returned no upload instructions".to_string(),
            })?;
    let form = UploadForm::from_wire(
        op,
        wire::UploadFormWire {
            url: created.url.unwrap_or_default(),
            method: created.method,
            inputs: created.inputs,
            field: created.field,
            enctype: created.enctype,
        },
    )?;
    let empty = ContentUpload {
        id: package.content_id(),
        content_type: "application/json".to_string(),
        length: 0,
        sha256: EMPTY_SHA256.to_string(),
        tags: Default::default(),
        body: Box::pin(tokio::io::empty()),
    };
    upload::post_form(platform, form, empty).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otau::Manifest;

    #[test]
    fn the_request_matches_the_documented_mutation() {
        let package = PackageRegistration {
            slug: "oem_firmware_update_1.0.2".into(),
            author: "user@example.com".into(),
            product: "myconnector".into(),
            manifest: Manifest::url_list(
                "1.0.2",
                "Firmware update",
                "",
                vec!["firmware_updatev102.txt".into()],
            ),
            total_devices: 2,
            device_tags: vec!["a0001".into()],
        };
        let q =
            CreateContentGQL::build_query(variables("d1zzd6dflnt50000", &package).expect("vars"));
        let v = serde_json::to_value(&q).expect("json");
        assert_eq!(v["operationName"], "CreateContentGQL");
        assert!(
            v["query"]
                .as_str()
                .is_some_and(|q| q.contains("createContent(content: $content)"))
        );
        let content = &v["variables"]["content"];
        assert_eq!(content["name"], "package_oem_firmware_update_1.0.2.json");
        assert_eq!(content["type"], "firmware");
        assert_eq!(content["length"], 0);
        assert_eq!(content["product_id"], "d1zzd6dflnt50000");
        assert_eq!(content["tags"][2]["name"], "total-devices");
        assert_eq!(content["tags"][2]["value"], 2);
        assert_eq!(content["tags"][3]["name"], "d1zzd6dflnt50000.a0001");
        let info: serde_json::Value =
            serde_json::from_str(content["tags"][0]["value"].as_str().expect("string"))
                .expect("otau_info Json");
        assert_eq!(info["config_otau"]["version"], "1.0.2");
    }
}
