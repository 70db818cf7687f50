//! File sources of a package: an http(s) URL, a ConfigMap key or a Secret key, read into
//! something that can be uploaded (again, if an upload is retried) with its sha256 and size.
//!
//! URL downloads stream into a temporary file under `--work-dir` while they are hashed and
//! counted; they never sit whole in memory, and a download over `--max-file-bytes` stops at
//! the limit. The sha256 is compared before anything is uploaded. ConfigMap and Secret values
//! are at most 1 MiB (an etcd limit) and are held in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::api::software_package::PackageFile;
use crate::controller::error::{Error, redact_url};
use crate::controller::{Context, Settings};
use crate::net::outbound::{OutboundError, OutboundPolicy};
use crate::platform::UploadBody;

/// The label a Secret or ConfigMap needs (value `true`) before a package may use it as a file
/// source: creating a package must not copy an object nobody opted in to devices.
pub const SOURCE_LABEL: &str = crate::api::opt_in::PACKAGE_SOURCE_LABEL;
/// Redirects followed per download (each hop is checked like the first URL).
pub const MAX_REDIRECTS: usize = 5;
/// Connect timeout of a download.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A temporary file, removed when dropped.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Creates a new, empty file in `dir`.
    async fn create(dir: &Path) -> std::io::Result<(TempFile, tokio::fs::File)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        for _ in 0..16 {
            let path = dir.join(format!(
                "otau-download-{}-{}-{:08x}.part",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            ));
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(file) => return Ok((TempFile { path }, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(
            "could not pick a free temporary file name",
        ))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
enum Stored {
    Memory(Arc<[u8]>),
    File(TempFile),
}

/// A file read from its source and verified.
#[derive(Debug)]
pub struct Fetched {
    /// Lowercase hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    stored: Stored,
}

impl Fetched {
    /// The bytes as an upload body (opened anew for each upload attempt).
    pub async fn open(&self) -> std::io::Result<UploadBody> {
        Ok(match &self.stored {
            Stored::Memory(bytes) => Box::pin(std::io::Cursor::new(bytes.clone())),
            Stored::File(temp) => Box::pin(tokio::fs::File::open(&temp.path).await?),
        })
    }

    fn in_memory(bytes: Vec<u8>) -> Self {
        Fetched {
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            stored: Stored::Memory(bytes.into()),
        }
    }
}

/// Reads `file` from its source (in `namespace`) and checks its size and sha256.
pub async fn fetch(
    file: &PackageFile,
    namespace: &str,
    allow_http: bool,
    ctx: &Context,
) -> Result<Fetched, Error> {
    let limit = ctx.settings.max_file_bytes;
    let fetched = if let Some(url) = &file.url {
        fetch_url(&file.name, url, allow_http, &ctx.settings).await?
    } else if let Some(r) = &file.config_map_key_ref {
        let map = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&r.name)
            .await
            .map_err(Error::kube("get ConfigMap"))?
            .ok_or_else(|| Error::SourceUnavailable {
                file: file.name.clone(),
                message: format!("ConfigMap {} not found", r.name),
            })?;
        opted_in(&file.name, "configmap", namespace, &r.name, &map.metadata)?;
        let bytes = map
            .binary_data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| b.0.clone())
            .or_else(|| {
                map.data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|s| s.as_bytes().to_vec())
            })
            .ok_or_else(|| Error::SourceUnavailable {
                file: file.name.clone(),
                message: format!(
                    "ConfigMap {} has no key {:?} in binaryData or data",
                    r.name, r.key
                ),
            })?;
        Fetched::in_memory(bytes)
    } else if let Some(r) = &file.secret_key_ref {
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&r.name)
            .await
            .map_err(Error::kube("get Secret"))?
            .ok_or_else(|| Error::SourceUnavailable {
                file: file.name.clone(),
                message: format!("Secret {} not found", r.name),
            })?;
        opted_in(&file.name, "secret", namespace, &r.name, &secret.metadata)?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| b.0.clone())
            .ok_or_else(|| Error::SourceUnavailable {
                file: file.name.clone(),
                message: format!("Secret {} has no key {:?}", r.name, r.key),
            })?;
        Fetched::in_memory(bytes)
    } else {
        return Err(Error::PackageInvalid {
            message: format!(
                "file {} has no source: set url, configMapKeyRef or secretKeyRef",
                file.name
            ),
        });
    };
    if fetched.size > limit {
        return Err(Error::FileTooLarge {
            file: file.name.clone(),
            limit,
        });
    }
    if let Some(expected) = &file.sha256 {
        let expected = expected.to_ascii_lowercase();
        if expected != fetched.sha256 {
            return Err(Error::ChecksumMismatch {
                file: file.name.clone(),
                expected,
                actual: fetched.sha256,
            });
        }
    }
    Ok(fetched)
}

/// Whether the ConfigMap or Secret (`kind` as kubectl spells it) `name` carries the
/// [`SOURCE_LABEL`] opt-in; the refusal says how to add it.
fn opted_in(
    file: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(), Error> {
    if crate::api::opt_in::has_true_label(meta, SOURCE_LABEL) {
        return Ok(());
    }
    let shown = if kind == "secret" {
        "Secret"
    } else {
        "ConfigMap"
    };
    Err(Error::SourceRefused {
        file: file.to_string(),
        message: format!(
            "{shown} {name} is not labelled {SOURCE_LABEL}=true, so no package may copy it to devices; if it is meant to be a package source, label it: kubectl label {kind} {name} {SOURCE_LABEL}=true -n {namespace}"
        ),
    })
}

/// Downloads `url` into a temporary file, following up to [`MAX_REDIRECTS`] redirects, each
/// hop checked for scheme and address.
pub async fn fetch_url(
    file: &str,
    url: &str,
    allow_http: bool,
    settings: &Settings,
) -> Result<Fetched, Error> {
    let unavailable = |message: String| Error::SourceUnavailable {
        file: file.to_string(),
        message,
    };
    let refused = |message: String| Error::SourceRefused {
        file: file.to_string(),
        message,
    };
    let deadline = Instant::now() + settings.fetch_timeout;
    let timed_out = || {
        unavailable(format!(
            "the download did not finish within {} s",
            settings.fetch_timeout.as_secs()
        ))
    };
    let mut current =
        url::Url::parse(url).map_err(|e| refused(format!("the url is not valid: {e}")))?;
    let policy = &settings.outbound;
    // The outbound policy's client (src/net/outbound.rs): every name it resolves is checked,
    // and it follows no redirect by itself: the loop below checks each hop first.
    let http = policy
        .client_builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(crate::platform::config::user_agent(&settings.instance))
        .build()
        .map_err(|e| unavailable(format!("cannot build an HTTP client: {e}")))?;
    for _hop in 0..=MAX_REDIRECTS {
        let shown = redact_url(&current);
        check_hop(&current, &shown, allow_http, policy)
            .await
            .map_err(|e| match e {
                OutboundError::Refused(why) => refused(why),
                OutboundError::Unresolvable(why) => unavailable(why),
            })?;
        let response = tokio::time::timeout_at(deadline, http.get(current.clone()).send())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| unavailable(format!("GET {shown}: {}", error_text(&e))))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    unavailable(format!("GET {shown}: HTTP {status} without a Location"))
                })?;
            current = current
                .join(location)
                .map_err(|e| unavailable(format!("GET {shown}: bad redirect: {e}")))?;
            continue;
        }
        if !status.is_success() {
            return Err(unavailable(format!(
                "GET {shown}: HTTP {}",
                status.as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > settings.max_file_bytes)
        {
            return Err(Error::FileTooLarge {
                file: file.to_string(),
                limit: settings.max_file_bytes,
            });
        }
        return stream_to_file(file, &shown, response, deadline, settings).await;
    }
    Err(unavailable(format!(
        "more than {MAX_REDIRECTS} redirects starting at {}",
        redact_url(&url::Url::parse(url).map_err(|e| refused(e.to_string()))?)
    )))
}

/// Checks one hop of a download before it is requested: the scheme (`http` only with the
/// package's `allowInsecureHttp`), then the outbound policy (the host resolved and every
/// address checked, so a refusal names the address before anything is sent).
async fn check_hop(
    url: &url::Url,
    shown: &str,
    allow_http: bool,
    policy: &OutboundPolicy,
) -> Result<(), OutboundError> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(OutboundError::Refused(format!(
                "{shown} uses plain http://: use https:// or set allowInsecureHttp: true in the package"
            )));
        }
        other => {
            return Err(OutboundError::Refused(format!(
                "{shown}: the scheme {other:?} is not supported"
            )));
        }
    }
    policy.check_destination(url).await
}

async fn stream_to_file(
    file: &str,
    shown: &str,
    response: reqwest::Response,
    deadline: Instant,
    settings: &Settings,
) -> Result<Fetched, Error> {
    let unavailable = |message: String| Error::SourceUnavailable {
        file: file.to_string(),
        message,
    };
    let (temp, mut out) = TempFile::create(&settings.work_dir).await.map_err(|e| {
        unavailable(format!(
            "cannot create a temporary file in {}: {e}",
            settings.work_dir.display()
        ))
    })?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut body = response.bytes_stream();
    loop {
        let next = tokio::time::timeout_at(deadline, body.next())
            .await
            .map_err(|_| {
                unavailable(format!(
                    "the download of {shown} did not finish within {} s",
                    settings.fetch_timeout.as_secs()
                ))
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| unavailable(format!("GET {shown}: {}", error_text(&e))))?;
        size += chunk.len() as u64;
        if size > settings.max_file_bytes {
            return Err(Error::FileTooLarge {
                file: file.to_string(),
                limit: settings.max_file_bytes,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| unavailable(format!("writing the temporary file: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| unavailable(format!("writing the temporary file: {e}")))?;
    drop(out);
    Ok(Fetched {
        sha256: hex::encode(hasher.finalize()),
        size,
        stored: Stored::File(temp),
    })
}

/// An error chain without the URL (reqwest's messages include it, query and all).
fn error_text(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    if e.is_timeout() {
        parts.push("timed out".to_string());
    } else if e.is_connect() {
        parts.push("connection failed".to_string());
    } else if e.is_body() || e.is_decode() {
        parts.push("the body broke off".to_string());
    } else {
        parts.push("request failed".to_string());
    }
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn temp_files_vanish_when_dropped() {
        let dir = std::env::temp_dir();
        let (temp, mut file) = TempFile::create(&dir).await.unwrap();
        file.write_all(b"abc").await.unwrap();
        drop(file);
        let path = temp.path.clone();
        assert!(path.exists());
        drop(temp);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn memory_sources_hash_and_reopen() {
        let f = Fetched::in_memory(b"hello".to_vec());
        assert_eq!(
            f.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(f.size, 5);
        for _ in 0..2 {
            let mut body = f.open().await.unwrap();
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut body, &mut out)
                .await
                .unwrap();
            assert_eq!(out, b"hello");
        }
    }

    #[tokio::test]
    async fn http_and_private_hosts_are_refused_before_connecting() {
        let settings = Settings::default();
        let e = fetch_url("a.bin", "http://example.com/a.bin", false, &settings)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::SourceRefused { .. }), "{e}");
        assert!(e.to_string().contains("allowInsecureHttp"));
        let e = fetch_url(
            "a.bin",
            "https://169.254.169.254/latest/meta-data?token=x",
            false,
            &settings,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::SourceRefused { .. }), "{e}");
        assert!(e.to_string().contains("link-local"), "{e}");
        assert!(!e.to_string().contains("token=x"), "{e}");
    }
}
