//! One request to the platform, with the rate limit, the `Retry-After` gate, retries with
//! backoff, the one re-read of credentials after a 401, metrics, and error mapping.
//!
//! Answers are read with a cap per operation ([`answer_cap`]); a redirect is an error naming
//! its status (the client follows none: src/net/outbound.rs). What the platform writes in an
//! error body never goes into the error (whose text reaches conditions and Events): it is
//! logged at debug level, shortened and with the token removed; the error names the operation
//! and the HTTP status.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use crate::net::outbound::{BodyError, read_capped};
use crate::platform::config::{ClientConfig, CredentialsProvider};
use crate::platform::error::PlatformError;
use crate::platform::metrics::{OUTCOME_SUCCESS, PlatformMetrics};
use crate::platform::rate_limit::TokenBucket;
use crate::platform::retry::{RetryAfterGate, parse_retry_after};
use crate::platform::secret::{SecretToken, redact};

/// Longest platform message kept in a debug log line.
const MAX_MESSAGE_CHARS: usize = 300;
/// The most bytes of an error body read (for the debug log and the `not settable` check).
pub(crate) const ERROR_BODY_MAX_BYTES: u64 = 64 * 1024;
/// The cap of an answer about one object: an identity's state (resource values up to 1 MiB
/// each, set and reported), a content item (its tags, one per device on a registration).
pub const OBJECT_ANSWER_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The cap of every other answer: a token check, the connector settings, an upload form, a
/// write's echo, a GraphQL answer.
pub const SMALL_ANSWER_MAX_BYTES: u64 = 1024 * 1024;

/// Which credentials a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthKind {
    /// `Authorization: <scheme> <management token>`.
    Management,
    /// `Authorization: Automation <ExoSense token>`.
    ExoSense,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Under the management base: these path segments (percent-encoded here), then the query.
    /// With `token_segment`, the current token is appended as the last segment (token check).
    Management {
        segments: Vec<String>,
        trailing_slash: bool,
        token_segment: bool,
        query: Vec<(String, String)>,
    },
    /// An absolute URL (the ExoSense endpoint).
    Absolute(url::Url),
}

/// One logical call.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// Route name for metrics and errors.
    pub operation: &'static str,
    pub method: Method,
    pub target: Target,
    /// JSON body.
    pub body: Option<Bytes>,
    /// Safe to send again after a 5xx, timeout or dropped connection.
    pub idempotent: bool,
    pub auth: AuthKind,
}

impl Call {
    /// A call under the management base.
    pub fn management(operation: &'static str, method: Method, segments: &[&str]) -> Self {
        Call {
            operation,
            method,
            target: Target::Management {
                segments: segments.iter().map(|s| s.to_string()).collect(),
                trailing_slash: false,
                token_segment: false,
                query: Vec::new(),
            },
            body: None,
            idempotent: true,
            auth: AuthKind::Management,
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        if let Target::Management { query, .. } = &mut self.target {
            query.push((name.to_string(), value.into()));
        }
        self
    }

    /// Ends the path with `/`.
    pub fn trailing_slash(mut self) -> Self {
        if let Target::Management { trailing_slash, .. } = &mut self.target {
            *trailing_slash = true;
        }
        self
    }

    /// Appends the token as the last path segment.
    pub fn token_segment(mut self) -> Self {
        if let Target::Management { token_segment, .. } = &mut self.target {
            *token_segment = true;
        }
        self
    }

    /// Sets a JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = Some(Bytes::from(value.to_string()));
        self
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// What one attempt produced.
enum Attempt {
    Done(Answer),
    /// 401: may re-read the credentials once.
    Unauthorized(PlatformError),
    /// May be retried (if the call is idempotent, or always for 429), after `wait` when given.
    Retry {
        error: PlatformError,
        wait: Option<Duration>,
        always_safe: bool,
    },
    Fail(PlatformError),
}

/// The shared state of one connector's client.
pub(crate) struct Transport {
    pub http: reqwest::Client,
    /// A separate client for identity listings, keeping at most one idle connection: a
    /// connection that carried a ~1 MB listing page keeps a read buffer of a few hundred KiB,
    /// and in the shared pool every one of the (up to `--write-concurrency`) write connections
    /// would end up holding one (about 20 MB measured at 100,000 devices).
    pub listing_http: reqwest::Client,
    pub config: ClientConfig,
    pub bucket: TokenBucket,
    pub gate: RetryAfterGate,
    pub metrics: Option<Arc<PlatformMetrics>>,
}

impl Transport {
    fn credentials(&self, auth: AuthKind) -> Result<Arc<dyn CredentialsProvider>, PlatformError> {
        match auth {
            AuthKind::Management => Ok(self.config.credentials.clone()),
            AuthKind::ExoSense => self
                .config
                .exosense
                .as_ref()
                .map(|e| e.credentials.clone())
                .ok_or(PlatformError::InvalidRequest {
                    operation: "exosense",
                    message: "ExoSense is not configured for this connector".to_string(),
                }),
        }
    }

    /// Runs a call to completion: success, a permanent error, or the last transient error
    /// after the allowed tries.
    pub async fn execute(&self, call: &Call) -> Result<Answer, PlatformError> {
        let provider = self.credentials(call.auth)?;
        let mut token = provider.current().await?;
        let mut reloaded = false;
        let max_tries = self.config.retry.max_tries.max(1);
        let mut tries = 0u32;
        loop {
            tries += 1;
            self.gate.wait().await;
            self.bucket.acquire().await;
            // A 429 may have arrived while this call waited for its slot.
            self.gate.wait().await;
            let started = Instant::now();
            let attempt = self.attempt(call, &token).await;
            let elapsed = started.elapsed().as_secs_f64();
            let outcome = match &attempt {
                Attempt::Done(_) => OUTCOME_SUCCESS,
                Attempt::Unauthorized(e) | Attempt::Fail(e) => e.metric_label(),
                Attempt::Retry { error, .. } => error.metric_label(),
            };
            if let Some(m) = &self.metrics {
                m.observe(call.operation, outcome, elapsed);
            }
            match attempt {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Fail(e) => return Err(e),
                Attempt::Unauthorized(e) => {
                    if reloaded {
                        return Err(e);
                    }
                    reloaded = true;
                    let fresh = provider.reload().await?;
                    if fresh == token {
                        return Err(e);
                    }
                    tracing::info!(
                        operation = call.operation,
                        "credentials rejected; retrying once with re-read credentials"
                    );
                    token = fresh;
                    // The retry with new credentials does not use up a try.
                    tries -= 1;
                }
                Attempt::Retry {
                    error,
                    wait,
                    always_safe,
                } => {
                    if tries >= max_tries || !(always_safe || call.idempotent) {
                        return Err(error);
                    }
                    let delay = wait.unwrap_or_else(|| self.config.retry.backoff().delay(tries));
                    if let Some(m) = &self.metrics {
                        m.retry(call.operation, error.metric_label());
                    }
                    tracing::debug!(
                        operation = call.operation,
                        tries,
                        delay_ms = delay.as_millis() as u64,
                        error = %error,
                        "retrying platform request"
                    );
                    // A Retry-After already holds the gate; a plain backoff holds only this call.
                    if wait.is_none() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    fn url(&self, call: &Call, token: &SecretToken) -> Result<url::Url, PlatformError> {
        match &call.target {
            Target::Absolute(url) => Ok(url.clone()),
            Target::Management {
                segments,
                trailing_slash,
                token_segment,
                query,
            } => {
                let mut url = self.config.management_url.clone();
                {
                    let mut path =
                        url.path_segments_mut()
                            .map_err(|()| PlatformError::InvalidRequest {
                                operation: call.operation,
                                message: "the management URL cannot be a base URL".to_string(),
                            })?;
                    path.pop_if_empty();
                    path.extend(segments.iter().map(String::as_str));
                    if *token_segment {
                        path.push(token.expose_secret());
                    }
                    if *trailing_slash {
                        path.push("");
                    }
                }
                if !query.is_empty() {
                    url.query_pairs_mut()
                        .extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                }
                Ok(url)
            }
        }
    }

    fn authorization(
        &self,
        call: &Call,
        token: &SecretToken,
    ) -> Result<HeaderValue, PlatformError> {
        let scheme = match call.auth {
            AuthKind::Management => self.config.auth_scheme.word(),
            AuthKind::ExoSense => "Automation",
        };
        let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose_secret()))
            .map_err(|_| PlatformError::InvalidRequest {
                operation: call.operation,
                message: "the token holds characters that cannot be sent in an HTTP header"
                    .to_string(),
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    async fn attempt(&self, call: &Call, token: &SecretToken) -> Attempt {
        let url = match self.url(call, token) {
            Ok(u) => u,
            Err(e) => return Attempt::Fail(e),
        };
        let auth = match self.authorization(call, token) {
            Ok(a) => a,
            Err(e) => return Attempt::Fail(e),
        };
        let client = if call.operation == crate::platform::exosite::operation::LIST_IDENTITIES {
            &self.listing_http
        } else {
            &self.http
        };
        let mut request = client
            .request(call.method.clone(), url)
            .timeout(self.config.request_timeout)
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json");
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return self.transport_failure(call, &e, token),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let received = Instant::now();
        if status.is_success() {
            let cap = answer_cap(call.operation, &self.config);
            return match read_capped(response, cap).await {
                Ok(body) => Attempt::Done(Answer { status, body }),
                Err(BodyError::Broken(e)) => self.transport_failure(call, &e, token),
                Err(BodyError::TooLarge { cap }) => Attempt::Fail(too_large(call.operation, cap)),
            };
        }
        let body = read_capped(response, ERROR_BODY_MAX_BYTES)
            .await
            .unwrap_or_default();
        let platform_says = error_message(&body, &[token]);
        if !platform_says.is_empty() {
            tracing::debug!(
                operation = call.operation,
                status = status.as_u16(),
                platform_says = %platform_says,
                "the platform's error answer"
            );
        }
        classify_status(
            call.operation,
            status,
            &platform_says,
            retry_after,
            received,
            &self.gate,
        )
    }

    fn transport_failure(&self, call: &Call, e: &reqwest::Error, token: &SecretToken) -> Attempt {
        let reason = if e.is_timeout() {
            format!(
                "no answer within {} s",
                self.config.request_timeout.as_secs_f64()
            )
        } else if e.is_connect() {
            format!("cannot connect: {}", error_chain(e, token))
        } else {
            format!("request failed: {}", error_chain(e, token))
        };
        Attempt::Retry {
            error: PlatformError::Unavailable {
                operation: call.operation,
                reason,
            },
            wait: None,
            always_safe: false,
        }
    }
}

/// The answer cap of `operation`: a listing page or the content list as the configuration
/// says (`--platform-page-max-bytes`), an answer about one object
/// [`OBJECT_ANSWER_MAX_BYTES`], anything else [`SMALL_ANSWER_MAX_BYTES`].
pub(crate) fn answer_cap(operation: &str, config: &ClientConfig) -> u64 {
    use crate::platform::exosite::operation as op;
    match operation {
        op::LIST_IDENTITIES | op::CONTENT_LIST => config.max_page_bytes,
        op::GET_STATE | op::CONTENT_INFO => OBJECT_ANSWER_MAX_BYTES,
        _ => SMALL_ANSWER_MAX_BYTES,
    }
}

/// The error of an answer over its cap.
pub(crate) fn too_large(operation: &'static str, cap: u64) -> PlatformError {
    PlatformError::InvalidResponse {
        operation,
        message: format!(
            "the answer is larger than {cap} bytes, the most this operation reads (listing pages: --platform-page-max-bytes, or fewer identities per page with --poll-page-size)"
        ),
    }
}

/// Maps a non-2xx status to an attempt result. `platform_says` (the error body's message)
/// decides between `NotSettable` and `Rejected` for a 400 and is never put into the error.
fn classify_status(
    operation: &'static str,
    status: StatusCode,
    platform_says: &str,
    retry_after: Option<Duration>,
    received: Instant,
    gate: &RetryAfterGate,
) -> Attempt {
    let code = status.as_u16();
    match code {
        401 => Attempt::Unauthorized(PlatformError::Authentication {
            operation,
            status: code,
            message: "the token was not accepted".to_string(),
        }),
        403 => Attempt::Fail(PlatformError::Authentication {
            operation,
            status: code,
            message: "the token is not allowed to do this".to_string(),
        }),
        404 => Attempt::Fail(PlatformError::NotFound {
            operation,
            message: "HTTP 404".to_string(),
        }),
        300..=399 => Attempt::Fail(PlatformError::Rejected {
            operation,
            status: code,
            message: "the platform answered with a redirect, which the operator does not follow: check the connector's URL".to_string(),
        }),
        400 if platform_says.to_ascii_lowercase().contains("not settable") => {
            Attempt::Fail(PlatformError::NotSettable {
                operation,
                message: "HTTP 400".to_string(),
            })
        }
        429 => {
            if let Some(wait) = retry_after {
                gate.block_until(received + wait);
            }
            Attempt::Retry {
                error: PlatformError::RateLimited {
                    operation,
                    retry_after,
                },
                wait: retry_after,
                always_safe: true,
            }
        }
        408 | 500..=599 => Attempt::Retry {
            error: PlatformError::Unavailable {
                operation,
                reason: format!("HTTP {code}"),
            },
            wait: None,
            always_safe: false,
        },
        _ => Attempt::Fail(PlatformError::Rejected {
            operation,
            status: code,
            message: "the platform refused the request".to_string(),
        }),
    }
}

/// The platform's message from an error body, for the debug log: `message` of a JSON body,
/// the first GraphQL error, or the text; shortened, with any echoed token removed.
pub(crate) fn error_message(body: &[u8], tokens: &[&SecretToken]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str().map(str::to_string))
                .or_else(|| {
                    v.get("errors")
                        .and_then(|e| e.get(0))
                        .and_then(|e| e.get("message"))
                        .and_then(|m| m.as_str().map(str::to_string))
                })
        });
    let message = from_json.unwrap_or_else(|| text.trim().to_string());
    let message = redact(&message, tokens);
    shorten(&message)
}

/// Cuts a message to [`MAX_MESSAGE_CHARS`] characters.
pub(crate) fn shorten(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        message.to_string()
    } else {
        let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}…")
    }
}

/// A reqwest error and its causes, without the URL (which may hold the token).
pub(crate) fn error_chain(e: &reqwest::Error, token: &SecretToken) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let text = if parts.is_empty() {
        "connection error".to_string()
    } else {
        parts.join(": ")
    };
    shorten(&redact(&text, &[token]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_json_graphql_or_text() {
        let t = SecretToken::new("abc123");
        assert_eq!(
            error_message(
                br#"{"statusCode":400,"message":"Value is not settable"}"#,
                &[&t]
            ),
            "Value is not settable"
        );
        assert_eq!(
            error_message(br#"{"errors":[{"message":"Unauthorized"}]}"#, &[&t]),
            "Unauthorized"
        );
        assert_eq!(
            error_message(b"  token abc123 is bad\n", &[&t]),
            "token [redacted] is bad"
        );
        assert_eq!(error_message(&[b'x'; 1000], &[]).chars().count(), 301);
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let gate = RetryAfterGate::default();
        let now = Instant::now();
        let classify = |code: u16, msg: &str, ra: Option<Duration>| {
            classify_status(
                "op",
                StatusCode::from_u16(code).expect("status"),
                msg,
                ra,
                now,
                &gate,
            )
        };
        assert!(matches!(
            classify(400, "Value is not settable", None),
            Attempt::Fail(PlatformError::NotSettable { .. })
        ));
        assert!(matches!(
            classify(400, "Validation errors", None),
            Attempt::Fail(PlatformError::Rejected { status: 400, .. })
        ));
        assert!(matches!(
            classify(401, "", None),
            Attempt::Unauthorized(PlatformError::Authentication { status: 401, .. })
        ));
        assert!(matches!(
            classify(403, "", None),
            Attempt::Fail(PlatformError::Authentication { status: 403, .. })
        ));
        assert!(matches!(
            classify(404, "", None),
            Attempt::Fail(PlatformError::NotFound { .. })
        ));
        assert!(matches!(
            classify(503, "", None),
            Attempt::Retry {
                error: PlatformError::Unavailable { .. },
                always_safe: false,
                ..
            }
        ));
        assert!(matches!(
            classify(302, "", None),
            Attempt::Fail(PlatformError::Rejected { status: 302, .. })
        ));
        assert!(matches!(
            classify(429, "", Some(Duration::from_secs(2))),
            Attempt::Retry {
                error: PlatformError::RateLimited { .. },
                always_safe: true,
                wait: Some(_),
            }
        ));
    }

    /// What the platform writes in an error body (which may echo request data) never
    /// reaches the error's text, which conditions and Events show.
    #[test]
    fn errors_never_carry_what_the_platform_wrote() {
        let gate = RetryAfterGate::default();
        let said = "echoed-request-data not settable";
        for code in [301, 302, 400, 401, 403, 404, 409, 422, 500, 503] {
            let status = StatusCode::from_u16(code).expect("status");
            let error = match classify_status("op", status, said, None, Instant::now(), &gate) {
                Attempt::Fail(e) | Attempt::Unauthorized(e) => e,
                Attempt::Retry { error, .. } => error,
                Attempt::Done(_) => panic!("{code} is not a success"),
            };
            let text = error.to_string();
            assert!(!text.contains("echoed"), "HTTP {code}: {text}");
            assert!(text.contains("op"), "names the operation: {text}");
        }
    }
}
