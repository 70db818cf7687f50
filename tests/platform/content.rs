//! Content upload (two-step presigned POST, streamed), info, list and delete
//! (exosite-platform.md §5.5).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use otau_operator::platform::{ContentUpload, Platform, PlatformError};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::harness::Emu;

/// A reader that makes `len` seeded pseudo-random bytes as it is read, so the test never holds
/// the whole file; it also records the largest single read it served.
struct Generated {
    rng: ChaCha8Rng,
    left: u64,
}

impl Generated {
    fn new(seed: u64, len: u64) -> Self {
        Generated {
            rng: ChaCha8Rng::seed_from_u64(seed),
            left: len,
        }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        let mut chunk = vec![0u8; n];
        self.rng.fill_bytes(&mut chunk);
        buf.put_slice(&chunk);
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// SHA-256 of the generated stream, computed by generating it once more.
fn generated_sha256(seed: u64, len: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut left = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = (chunk.len() as u64).min(left) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    hex::encode(hasher.finalize())
}

fn upload(id: &str, data: &'static [u8], tags: &[(&str, &str)]) -> ContentUpload {
    ContentUpload {
        id: id.to_string(),
        content_type: "text/plain".to_string(),
        length: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        body: Box::pin(data),
    }
}

/// Upload, info (with the sha256 and owner tags), list, delete, then `NotFound`.
#[tokio::test]
async fn upload_info_list_delete_with_sha256_tag() {
    let emu = Emu::start().await;
    let client = emu.client();
    let data: &'static [u8] = b"firmware bytes v1.0.2\n";
    let sha = hex::encode(Sha256::digest(data));
    client
        .upload_content(upload(
            "default.fw-1-0-2.fw.bin",
            data,
            &[("sha256", &sha), ("owner", "default/fw-1-0-2")],
        ))
        .await
        .expect("upload");
    let info = client
        .content_info("default.fw-1-0-2.fw.bin")
        .await
        .expect("info");
    assert_eq!(info.length, data.len() as u64);
    assert_eq!(info.content_type, "text/plain");
    assert_eq!(info.tags.get("sha256"), Some(&sha));
    assert_eq!(
        info.tags.get("owner").map(String::as_str),
        Some("default/fw-1-0-2")
    );
    // The bytes the store holds are the bytes sent.
    let stored = emu
        .conn()
        .content()
        .get("default.fw-1-0-2.fw.bin")
        .expect("stored");
    assert_eq!(&stored.data[..], data);
    let list = client.list_content().await.expect("list");
    assert!(list.iter().any(|c| c.id == "default.fw-1-0-2.fw.bin"));
    client
        .delete_content("default.fw-1-0-2.fw.bin")
        .await
        .expect("delete");
    let err = client
        .content_info("default.fw-1-0-2.fw.bin")
        .await
        .expect_err("gone");
    assert!(matches!(err, PlatformError::NotFound { .. }), "{err:?}");
    // The two upload steps hit the content service and then the object store.
    let log = emu.log();
    assert!(
        log.iter()
            .any(|l| l.method == "GET" && l.path.ends_with("/upload"))
    );
    assert!(
        log.iter().any(|l| l.method == "POST"
            && l.path.starts_with("/objectstore/")
            && l.status / 100 == 2)
    );
}

/// A 5 MiB file streams from a generating reader (never whole in the test's memory) and
/// arrives with the right digest.
#[tokio::test]
async fn five_mib_upload_is_streamed() {
    let emu = Emu::start().await;
    let client = emu.client();
    let len = 5 * 1024 * 1024;
    let sha = generated_sha256(7, len);
    client
        .upload_content(ContentUpload {
            id: "big.bin".into(),
            content_type: "application/octet-stream".into(),
            length: len,
            sha256: sha.clone(),
            tags: [("sha256".to_string(), sha.clone())].into(),
            body: Box::pin(Generated::new(7, len)),
        })
        .await
        .expect("upload");
    let stored = emu.conn().content().get("big.bin").expect("stored");
    assert_eq!(stored.data.len() as u64, len);
    assert_eq!(hex::encode(Sha256::digest(&stored.data)), sha);
    let info = client.content_info("big.bin").await.expect("info");
    assert_eq!(info.length, len);
}

/// A body whose digest differs from the announced sha256 fails the upload and stores nothing.
#[tokio::test]
async fn wrong_sha256_uploads_nothing() {
    let emu = Emu::start().await;
    let client = emu.client();
    let mut up = upload("bad.bin", b"these are the real bytes", &[]);
    up.sha256 = hex::encode(Sha256::digest(b"other bytes"));
    let err = client.upload_content(up).await.expect_err("mismatch");
    assert!(
        matches!(err, PlatformError::InvalidRequest { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(emu.conn().content().get("bad.bin").is_none());
    // A malformed digest is refused before any request.
    let mut up = upload("bad2.bin", b"x", &[]);
    up.sha256 = "XYZ".into();
    let err = client.upload_content(up).await.expect_err("bad digest");
    assert!(err.to_string().contains("64 lowercase hex"), "{err}");
}
