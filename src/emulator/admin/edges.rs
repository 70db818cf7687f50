//! One place to start every edge part from flags: [`EdgeArgs`] (flatten it into the
//! `emulator` command) and [`Edges`] (start it, then [`Edges::attach`] it to the router).
//!
//! ```text
//! let edges = Edges::start(&model, options.default_connector.as_deref(), &args.edges)?;
//! let app = edges.attach(server::router(state.clone()));
//! let running = server::start_with_router(addr, state, app).await?;
//! ```

use std::sync::Arc;

use axum::Router;

use super::{AdminState, RequestMetrics, attach};
use crate::emulator::faults::{FaultArgs, FaultConfigError, Faults};
use crate::emulator::graphql::GraphqlState;
use crate::emulator::model::Model;
use crate::emulator::webhook::{WebhookArgs, WebhookConfigError, WebhookDelivery};

/// Flags of the edge parts: fault injection, rate limit and webhook push.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EdgeArgs {
    /// Fault injection and rate limit.
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Webhook push of device2 events.
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// Why the edge parts cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Bad fault flags.
    #[error(transparent)]
    Faults(#[from] FaultConfigError),
    /// Bad webhook flags.
    #[error(transparent)]
    Webhook(#[from] WebhookConfigError),
    /// The webhook HTTP client could not be built.
    #[error("webhook client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The running edge parts.
#[derive(Debug)]
pub struct Edges {
    /// Shared with the admin endpoints.
    pub admin: AdminState,
    /// Shared with the GraphQL resolvers.
    pub graphql: GraphqlState,
    /// Webhook delivery, when a connector has a webhook with a non-empty secret.
    pub webhook: Option<WebhookDelivery>,
}

impl Edges {
    /// Validates the flags and starts webhook delivery (inside a tokio runtime). GraphQL
    /// accepts the model's management tokens as automation tokens.
    pub fn start(
        model: &Arc<Model>,
        default_connector: Option<&str>,
        args: &EdgeArgs,
    ) -> Result<Edges, EdgeError> {
        let faults = Arc::new(Faults::new(args.faults.to_config()?)?);
        let webhook_config = args.webhook.to_config(default_connector)?;
        let webhook = if webhook_config.is_active() {
            Some(WebhookDelivery::start(model, webhook_config)?)
        } else {
            None
        };
        Ok(Edges {
            admin: AdminState {
                model: model.clone(),
                faults,
                requests: RequestMetrics::new(),
                webhook: webhook.as_ref().map(WebhookDelivery::stats),
            },
            graphql: GraphqlState {
                model: model.clone(),
                default_connector: default_connector.map(str::to_string),
                automation_tokens: Vec::new(),
            },
            webhook,
        })
    }

    /// `app` with every edge part attached (see [`attach`]).
    pub fn attach(&self, app: Router) -> Router {
        attach(app, self.admin.clone(), self.graphql.clone())
    }
}
