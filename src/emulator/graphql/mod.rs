//! ExoSense GraphQL subset at `/api/graphql` (exosite-platform.md §7), served by async-graphql
//! so queries are validated against a real schema and failures come back as proper `errors`.
//!
//! - Transport (§7.1): `POST` with a JSON body that is one request object or an array of them
//!   (batch form; answered with an array in the same order). `Authorization: Automation
//!   <token>`; a missing or wrong token answers `401 {"errors":[{"message":"Unauthorized"}]}`.
//! - `createContent` (§7.2) stores the item in the connector's content store, the same store the
//!   management API and `/provision/download` use, and answers the presigned upload form.
//! - The asset operations of §7.3 are simple stubs (see [`assets`]).

pub mod assets;
pub mod content;

use std::sync::Arc;

use async_graphql::{EmptySubscription, MergedObject, Schema};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::model::Model;

/// Where the GraphQL endpoint is served.
pub const GRAPHQL_PATH: &str = "/api/graphql";
/// The authorization scheme of ExoSense automation tokens.
pub const AUTH_SCHEME: &str = "Automation";

/// What the resolvers and the handler need.
#[derive(Debug, Clone)]
pub struct GraphqlState {
    /// The platform model (its connectors' content stores).
    pub model: Arc<Model>,
    /// Connector used by `createContent` when neither `product_id` nor a `pid` tag names one.
    pub default_connector: Option<String>,
    /// Automation tokens accepted. Valid management tokens of the model are accepted as well,
    /// so the one token the emulator prints works for every API.
    pub automation_tokens: Vec<String>,
}

/// Every query of the emulated schema.
#[derive(MergedObject, Default)]
pub struct QueryRoot(assets::AssetQueries);

/// Every mutation of the emulated schema.
#[derive(MergedObject, Default)]
pub struct MutationRoot(content::ContentMutations, assets::AssetMutations);

/// The emulated ExoSense schema.
pub type ExoSenseSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema with `state` as context data.
pub fn schema(state: GraphqlState) -> ExoSenseSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .data(state)
    .limit_depth(16)
    .limit_complexity(1000)
    .finish()
}

#[derive(Clone)]
struct Endpoint {
    schema: ExoSenseSchema,
    state: GraphqlState,
}

/// The router serving [`GRAPHQL_PATH`] (merge it into the emulator's router).
pub fn router(state: GraphqlState) -> Router {
    let endpoint = Endpoint {
        schema: schema(state.clone()),
        state,
    };
    Router::new()
        .route(GRAPHQL_PATH, post(handle))
        .with_state(endpoint)
}

fn errors_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message}]});
    (status, axum::Json(body)).into_response()
}

/// Whether the request carries a token this emulator accepts.
fn authorized(headers: &HeaderMap, state: &GraphqlState) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(AUTH_SCHEME))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
    else {
        return false;
    };
    state.automation_tokens.iter().any(|t| t == token) || state.model.tokens().is_valid(token)
}

/// Parses the body into one request or a batch, with messages a person can act on.
fn parse_body(body: &[u8]) -> Result<async_graphql::BatchRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let one = |v: serde_json::Value, at: Option<usize>| {
        serde_json::from_value::<async_graphql::Request>(v).map_err(|e| match at {
            Some(i) => format!("batch element {i} is not a GraphQL request: {e}"),
            None => format!("the body is not a GraphQL request: {e}"),
        })
    };
    match value {
        serde_json::Value::Array(items) if items.is_empty() => {
            Err("a batch must hold at least one request".into())
        }
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| one(v, Some(i)))
            .collect::<Result<Vec<_>, _>>()
            .map(async_graphql::BatchRequest::Batch),
        other => one(other, None).map(async_graphql::BatchRequest::Single),
    }
}

async fn handle(State(endpoint): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &endpoint.state) {
        return errors_body(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let batch = match parse_body(&body) {
        Ok(b) => b,
        Err(message) => return errors_body(StatusCode::BAD_REQUEST, &message),
    };
    let response = endpoint.schema.execute_batch(batch).await;
    axum::Json(response).into_response()
}
