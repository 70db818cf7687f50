//! Content upload (exosite-platform.md §5.5): step 1 asks the content service for a presigned
//! POST form, step 2 posts `multipart/form-data` to the object store with the file part last.
//! The body streams from the caller's reader in chunks; its length and SHA-256 are checked on
//! the way, so a bad source never completes an upload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{ExositePlatform, check_id, operation, transport, wire};
use crate::net::outbound::read_capped;
use crate::platform::error::PlatformError;
use crate::platform::types::{ContentUpload, PackageRegistration, UploadBody};

/// Bytes read from the source per chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// A validated upload form.
#[derive(Debug)]
pub(super) struct UploadForm {
    pub url: url::Url,
    pub inputs: Vec<(String, String)>,
    pub field: String,
}

impl UploadForm {
    /// Checks the instructions: `POST` + `multipart/form-data` only (as MuranoCLI does), an
    /// absolute http(s) URL, and `inputs` as an object (or a JSON string holding one).
    pub fn from_wire(op: &'static str, w: wire::UploadFormWire) -> Result<Self, PlatformError> {
        let invalid = |message: String| PlatformError::InvalidResponse {
            operation: op,
            message,
        };
        let method = w.method.unwrap_or_default();
        let enctype = w.enctype.unwrap_or_default();
        if !method.eq_ignore_ascii_case("POST")
            || !enctype.eq_ignore_ascii_case("multipart/form-data")
        {
            return Err(invalid(format!(
                "the upload form asks for method {method:?} with enctype {enctype:?}; only POST multipart/form-data is supported"
            )));
        }
        let url = url::Url::parse(&w.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| invalid("the upload form has no absolute http(s) URL".to_string()))?;
        let inputs = match w.inputs {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m,
            Some(serde_json::Value::String(s)) => serde_json::from_str(&s).map_err(|_| {
                invalid("the upload form's inputs are not a JSON object".to_string())
            })?,
            Some(_) => {
                return Err(invalid(
                    "the upload form's inputs are not a JSON object".to_string(),
                ));
            }
        };
        let inputs = inputs
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        let field = w
            .field
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "file".to_string());
        Ok(UploadForm { url, inputs, field })
    }
}

/// The tags of a package item: `otau_info`, `pid`, `total-devices`, `<pid>.<identity>` = `1`.
pub(super) fn package_tags(
    connector_id: &str,
    package: &PackageRegistration,
) -> Result<BTreeMap<String, String>, PlatformError> {
    let mut tags = BTreeMap::new();
    tags.insert("otau_info".to_string(), otau_info(package)?);
    tags.insert("pid".to_string(), connector_id.to_string());
    tags.insert(
        "total-devices".to_string(),
        package.total_devices.to_string(),
    );
    for identity in &package.device_tags {
        tags.insert(format!("{connector_id}.{identity}"), "1".to_string());
    }
    Ok(tags)
}

/// The `otau_info` tag: a JSON string holding `author`, `product` and the manifest object.
pub(super) fn otau_info(package: &PackageRegistration) -> Result<String, PlatformError> {
    let manifest_text =
        package
            .manifest
            .to_json_checked()
            .map_err(|e| PlatformError::InvalidRequest {
                operation: operation::UPLOAD_FORM,
                message: format!("package {}: {e}", package.slug),
            })?;
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest_text).map_err(|e| PlatformError::InvalidRequest {
            operation: operation::UPLOAD_FORM,
            message: format!("package {}: manifest is not JSON: {e}", package.slug),
        })?;
    Ok(serde_json::json!({
        "author": package.author,
        "product": package.product,
        "config_otau": manifest,
    })
    .to_string())
}

fn check_upload(upload: &ContentUpload) -> Result<(), PlatformError> {
    check_id(operation::UPLOAD_FORM, "content", &upload.id)?;
    let sha_ok = upload.sha256.len() == 64
        && upload
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !sha_ok {
        return Err(PlatformError::InvalidRequest {
            operation: operation::UPLOAD_FORM,
            message: format!(
                "content {}: sha256 must be 64 lowercase hex characters",
                upload.id
            ),
        });
    }
    Ok(())
}

/// Uploads one item: form, then streamed POST.
pub(super) async fn upload(
    platform: &ExositePlatform,
    upload: ContentUpload,
) -> Result<(), PlatformError> {
    check_upload(&upload)?;
    let tags = serde_json::to_string(&upload.tags).map_err(|e| PlatformError::InvalidRequest {
        operation: operation::UPLOAD_FORM,
        message: format!("content {}: tags: {e}", upload.id),
    })?;
    let mut call = platform
        .call(
            operation::UPLOAD_FORM,
            Method::GET,
            platform.content(&[upload.id.as_str(), "upload"]),
        )
        .query("sha256", upload.sha256.clone())
        .query(
            "expires_in",
            platform.inner.config.upload_form_expires_secs.to_string(),
        )
        .query("type", upload.content_type.clone());
    if !upload.tags.is_empty() {
        call = call.query("tags", tags);
    }
    let answer = platform.inner.execute(&call).await?;
    let form = UploadForm::from_wire(
        operation::UPLOAD_FORM,
        wire::parse(operation::UPLOAD_FORM, &answer.body)?,
    )?;
    post_form(platform, form, upload).await
}

/// Step 2: posts the form with the body streamed as the last part. Not retried: the body has
/// been consumed; the caller runs the whole upload again.
pub(super) async fn post_form(
    platform: &ExositePlatform,
    form: UploadForm,
    upload: ContentUpload,
) -> Result<(), PlatformError> {
    let op = operation::UPLOAD_POST;
    // The platform names the upload URL: it goes through the same outbound policy as the
    // connector's own URLs (an address in the URL is checked here, a name when resolved).
    platform
        .inner
        .config
        .outbound
        .check_url(&form.url)
        .map_err(|e| PlatformError::InvalidResponse {
            operation: op,
            message: format!("the upload URL is refused: {e}"),
        })?;
    let failure: Arc<Mutex<Option<PlatformError>>> = Arc::default();
    let stream = checked_stream(
        upload.id.clone(),
        upload.body,
        upload.length,
        upload.sha256.clone(),
        failure.clone(),
    );
    let file = Part::stream_with_length(reqwest::Body::wrap_stream(stream), upload.length)
        .file_name(upload.id.clone())
        .mime_str(&upload.content_type)
        .map_err(|_| PlatformError::InvalidRequest {
            operation: op,
            message: format!(
                "content {}: {:?} is not a MIME type",
                upload.id, upload.content_type
            ),
        })?;
    let mut multipart = Form::new();
    for (name, value) in form.inputs {
        multipart = multipart.text(name, value);
    }
    multipart = multipart.part(form.field, file);

    let started = tokio::time::Instant::now();
    let result = platform
        .inner
        .http
        .post(form.url)
        .timeout(platform.inner.config.upload_timeout)
        .multipart(multipart)
        .send()
        .await;
    let local = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    let outcome = match (result, local) {
        (_, Some(local)) => Err(local),
        (Err(e), None) => Err(PlatformError::Unavailable {
            operation: op,
            reason: if e.is_timeout() {
                format!(
                    "the object store did not answer within {} s",
                    platform.inner.config.upload_timeout.as_secs()
                )
            } else {
                format!(
                    "object store: {}",
                    transport::error_chain(&e, &crate::platform::SecretToken::new(""))
                )
            },
        }),
        (Ok(response), None) => object_store_answer(response, &upload.id).await,
    };
    if let Some(m) = &platform.inner.metrics {
        let label = match &outcome {
            Ok(()) => crate::platform::metrics::OUTCOME_SUCCESS,
            Err(e) => e.metric_label(),
        };
        m.observe(op, label, started.elapsed().as_secs_f64());
    }
    outcome
}

/// The outcome of the object store's answer: success, or an error naming the status (what
/// the store wrote goes to the debug log only).
async fn object_store_answer(response: reqwest::Response, id: &str) -> Result<(), PlatformError> {
    let op = operation::UPLOAD_POST;
    let status = response.status();
    let body = read_capped(response, transport::ERROR_BODY_MAX_BYTES)
        .await
        .unwrap_or_default();
    if status.is_success() {
        return Ok(());
    }
    let said = transport::error_message(&body, &[]);
    if !said.is_empty() {
        tracing::debug!(operation = op, status = status.as_u16(), platform_says = %said, "the object store's error answer");
    }
    Err(if status.is_server_error() {
        PlatformError::Unavailable {
            operation: op,
            reason: format!("object store HTTP {}", status.as_u16()),
        }
    } else {
        PlatformError::Rejected {
            operation: op,
            status: status.as_u16(),
            message: format!("content {id}: the object store refused the upload"),
        }
    })
}

/// The body as a stream of chunks; the stream fails (and records why in `failure`) when the
/// source breaks, gives more or fewer than `length` bytes, or hashes to another SHA-256.
fn checked_stream(
    id: String,
    body: UploadBody,
    length: u64,
    sha256: String,
    failure: Arc<Mutex<Option<PlatformError>>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct Reader {
        id: String,
        body: UploadBody,
        length: u64,
        sent: u64,
        sha256: String,
        hasher: Sha256,
        buf: Vec<u8>,
        failure: Arc<Mutex<Option<PlatformError>>>,
        finished: bool,
    }
    impl Reader {
        fn fail(&mut self, error: PlatformError) -> std::io::Error {
            let text = error.to_string();
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            self.finished = true;
            std::io::Error::other(text)
        }
    }
    let reader = Reader {
        id,
        body,
        length,
        sent: 0,
        sha256,
        hasher: Sha256::new(),
        buf: vec![0; CHUNK_BYTES],
        failure,
        finished: false,
    };
    futures::stream::unfold(reader, |mut r| async move {
        if r.finished {
            return None;
        }
        let op = operation::UPLOAD_POST;
        match r.body.read(&mut r.buf).await {
            Err(e) => {
                let msg = format!("content {}: {e}", r.id);
                Some((
                    Err(r.fail(PlatformError::BodyRead {
                        operation: op,
                        message: msg,
                    })),
                    r,
                ))
            }
            Ok(0) => {
                let digest = hex::encode(r.hasher.clone().finalize());
                if r.sent != r.length {
                    let msg = format!(
                        "content {}: the body ended after {} of {} bytes",
                        r.id, r.sent, r.length
                    );
                    let e = r.fail(PlatformError::InvalidRequest {
                        operation: op,
                        message: msg,
                    });
                    Some((Err(e), r))
                } else if digest != r.sha256 {
                    let msg = format!(
                        "content {}: the body's sha256 is {digest}, expected {}",
                        r.id, r.sha256
                    );
                    let e = r.fail(PlatformError::InvalidRequest {
                        operation: op,
                        message: msg,
                    });
                    Some((Err(e), r))
                } else {
                    None
                }
            }
            Ok(n) => {
                r.sent += n as u64;
                if r.sent > r.length {
                    let msg = format!(
                        "content {}: the body is longer than the announced {} bytes",
                        r.id, r.length
                    );
                    let e = r.fail(PlatformError::InvalidRequest {
                        operation: op,
                        message: msg,
                    });
                    return Some((Err(e), r));
                }
                r.hasher.update(&r.buf[..n]);
                let chunk = Bytes::copy_from_slice(&r.buf[..n]);
                Some((Ok(chunk), r))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otau::Manifest;

    fn form(method: &str, enctype: &str, inputs: serde_json::Value) -> wire::UploadFormWire {
        serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:1/store", "method": method, "enctype": enctype,
            "inputs": inputs, "field": "file", "id": "x"
        }))
        .expect("form")
    }

    #[test]
    fn only_post_multipart_forms_are_accepted() {
        let ok = UploadForm::from_wire(
            "op",
            form(
                "POST",
                "multipart/form-data",
                serde_json::json!({"key": "k", "n": 1}),
            ),
        )
        .expect("valid");
        assert_eq!(ok.field, "file");
        assert!(ok.inputs.contains(&("n".to_string(), "1".to_string())));
        let as_string = UploadForm::from_wire(
            "op",
            form(
                "POST",
                "multipart/form-data",
                serde_json::json!("{\"key\":\"k\"}"),
            ),
        )
        .expect("inputs as a JSON string");
        assert_eq!(as_string.inputs, vec![("key".to_string(), "k".to_string())]);
        for (m, e) in [
            ("PUT", "multipart/form-data"),
            ("POST", "application/x-www-form-urlencoded"),
        ] {
            let err = UploadForm::from_wire("op", form(m, e, serde_json::json!({})))
                .expect_err("refused");
            assert!(
                matches!(err, PlatformError::InvalidResponse { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn package_tags_hold_otau_info_pid_total_and_devices() {
        let package = PackageRegistration {
            slug: "default-fw-1-0-2".into(),
            author: "ops@example.com".into(),
            product: "myconnector".into(),
            manifest: Manifest::url_list("1.0.2", "Firmware", "", vec!["fw.bin".into()]),
            total_devices: 2,
            device_tags: vec!["a0001".into(), "a0002".into()],
        };
        let tags = package_tags("d1zzd6dflnt50000", &package).expect("tags");
        assert_eq!(tags["pid"], "d1zzd6dflnt50000");
        assert_eq!(tags["total-devices"], "2");
        assert_eq!(tags["d1zzd6dflnt50000.a0001"], "1");
        let info: serde_json::Value = serde_json::from_str(&tags["otau_info"]).expect("json");
        assert_eq!(info["author"], "ops@example.com");
        assert_eq!(info["product"], "myconnector");
        assert_eq!(info["config_otau"]["payload"][0], "fw.bin");
        assert_eq!(info["config_otau"]["type"], "URL_LIST");
    }

    #[tokio::test]
    async fn the_stream_checks_length_and_sha256() {
        use futures::StreamExt;
        let data = b"hello world".to_vec();
        let sha = hex::encode(Sha256::digest(&data));
        let run = |body: Vec<u8>, length: u64, sha: String| async move {
            let failure: Arc<Mutex<Option<PlatformError>>> = Arc::default();
            let s = checked_stream(
                "f".into(),
                Box::pin(std::io::Cursor::new(body)),
                length,
                sha,
                failure.clone(),
            );
            let chunks: Vec<_> = s.collect().await;
            let ok = chunks.iter().all(|c| c.is_ok());
            let failed = failure.lock().expect("lock").take();
            (ok, failed)
        };
        assert_eq!(run(data.clone(), 11, sha.clone()).await, (true, None));
        let (ok, failed) = run(data.clone(), 12, sha.clone()).await;
        assert!(!ok && failed.is_some_and(|e| e.to_string().contains("11 of 12")));
        let (ok, failed) = run(data.clone(), 5, sha.clone()).await;
        assert!(!ok && failed.is_some_and(|e| e.to_string().contains("longer")));
        let (ok, failed) = run(b"hello WORLD".to_vec(), 11, sha).await;
        assert!(!ok && failed.is_some_and(|e| e.to_string().contains("sha256")));
    }
}
