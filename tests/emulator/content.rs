//! Content routes and the emulator's object store (exosite-platform.md §5.5) over real
//! loopback HTTP; each test names the §9 item it covers.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{CID, Emu};

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn enc(s: &str) -> String {
    let e: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
    e.replace('+', "%20")
}

/// Step 1: the upload form for `id`.
async fn upload_form(
    emu: &Emu,
    id: &str,
    sha256: &str,
    expires_in: u32,
    tags: Option<Value>,
) -> Value {
    let mut path = format!(
        "service/{CID}/content/item/{}/upload?sha256={sha256}&expires_in={expires_in}&type=application%2Foctet-stream",
        enc(id)
    );
    if let Some(t) = tags {
        path.push_str(&format!("&tags={}", enc(&t.to_string())));
    }
    let r = emu.mgmt(Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Step 2: POST the form's inputs (changed by `tamper`) and then the file.
async fn post_form(
    emu: &Emu,
    form: &Value,
    data: &[u8],
    tamper: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> (StatusCode, String) {
    let mut inputs = form["inputs"].as_object().unwrap().clone();
    tamper(&mut inputs);
    let mut multipart = Form::new();
    for (k, v) in inputs {
        multipart = multipart.text(k, v.as_str().unwrap().to_string());
    }
    let file = Part::bytes(data.to_vec())
        .file_name("upload.bin")
        .mime_str("application/octet-stream")
        .unwrap();
    multipart = multipart.part(form["field"].as_str().unwrap().to_string(), file);
    let r = emu
        .http
        .post(form["url"].as_str().unwrap())
        .multipart(multipart)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// §9 Must: the two-step presigned POST against the emulator's own object store, tags kept
/// (`otau_info`), info and list shapes, and the upload served to devices by
/// `/provision/download`.
#[tokio::test]
async fn presigned_upload_stores_file_with_tags_and_devices_download_it() {
    let emu = Emu::start().await;
    let data = b"firmware bytes 1.0.2\n";
    let otau_info = r#"{"author":"a@b.c","product":"p","config_otau":{"version":"1.0.2"}}"#;
    let form = upload_form(
        &emu,
        "fw 1.0.2.bin",
        &sha_hex(data),
        30,
        Some(json!({"otau_info": otau_info, "total-devices": 2})),
    )
    .await;
    assert_eq!(form["method"], "POST");
    assert_eq!(form["enctype"], "multipart/form-data");
    assert_eq!(form["field"], "file");
    assert_eq!(form["id"], "fw 1.0.2.bin");
    assert_eq!(form["url"], emu.model.object_store_url());
    for key in [
        "policy",
        "x-amz-signature",
        "x-amz-date",
        "x-amz-credential",
        "x-amz-algorithm",
        "key",
    ] {
        assert!(form["inputs"][key].is_string(), "inputs lack {key}");
    }
    let (status, body) = post_form(&emu, &form, data, |_| {}).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Info with tags.
    let r = emu
        .mgmt(
            Method::GET,
            &format!("service/{CID}/content/item/{}", enc("fw 1.0.2.bin")),
        )
        .send()
        .await
        .unwrap();
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["id"], "fw 1.0.2.bin");
    assert_eq!(info["type"], "application/octet-stream");
    assert_eq!(info["length"], data.len());
    assert_eq!(info["tags"]["otau_info"], otau_info);
    assert_eq!(info["tags"]["total-devices"], "2");
    let lm = info["last_modified"].as_str().unwrap();
    assert!(
        lm.len() == 24
            && lm.ends_with('Z')
            && lm.as_bytes()[10] == b'T'
            && lm.as_bytes()[19] == b'.',
        "{lm}"
    );
    // List, full and ids.
    let full: Value = emu
        .mgmt(
            Method::GET,
            &format!("service/{CID}/content/item?full=true"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full[0]["id"], "fw 1.0.2.bin");
    assert_eq!(full[0]["length"], data.len());
    // The device sees it.
    let token = emu.device("d1").await;
    let r = emu
        .dev(Method::GET, "/provision/download", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "fw 1.0.2.bin");
    let r = emu
        .dev(
            Method::GET,
            &format!("/provision/download?id={}", enc("fw 1.0.2.bin")),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], data);
    // Uploading the same id again replaces body and tags.
    let form = upload_form(&emu, "fw 1.0.2.bin", &sha_hex(b""), 30, None).await;
    assert_eq!(
        post_form(&emu, &form, b"", |_| {}).await.0,
        StatusCode::NO_CONTENT
    );
    let info: Value = emu
        .mgmt(
            Method::GET,
            &format!("service/{CID}/content/item/{}", enc("fw 1.0.2.bin")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["length"], 0);
    assert_eq!(info["tags"], json!({}));
}

/// §9 Must (object store checks): an expired form is refused with `403` (manual clock, no
/// sleep).
#[tokio::test]
async fn expired_presigned_post_is_403() {
    let emu = Emu::start_manual().await;
    let data = b"x";
    let form = upload_form(&emu, "f", &sha_hex(data), 30, None).await;
    emu.advance(Duration::from_secs(31));
    let (status, body) = post_form(&emu, &form, data, |_| {}).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("expired"), "{body}");
    assert!(emu.conn().content().get("f").is_none());
    // expires_in=0 is valid at the same instant only.
    let form = upload_form(&emu, "f", &sha_hex(data), 0, None).await;
    assert_eq!(
        post_form(&emu, &form, data, |_| {}).await.0,
        StatusCode::NO_CONTENT
    );
}

/// §9 Must (object store checks): a file whose SHA-256 differs from the declared one is
/// refused with `400` and not stored.
#[tokio::test]
async fn wrong_sha256_is_400() {
    let emu = Emu::start().await;
    let form = upload_form(&emu, "f", &sha_hex(b"expected"), 30, None).await;
    let (status, body) = post_form(&emu, &form, b"something else", |_| {}).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("SHA-256"), "{body}");
    assert!(emu.conn().content().get("f").is_none());
    // A malformed sha256 in step 1 is a 400 too.
    let r = emu
        .mgmt(
            Method::GET,
            &format!("service/{CID}/content/item/f/upload?sha256=xyz"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// A change made to an upload form's inputs.
type Tamper = Box<dyn FnOnce(&mut serde_json::Map<String, Value>)>;

/// §9 Must (object store checks): every signed input must be present and unchanged: a
/// tampered policy, key or signature, or a missing field, is `403`.
#[tokio::test]
async fn tampered_or_incomplete_forms_are_403() {
    let emu = Emu::start().await;
    let data = b"data";
    let form = upload_form(&emu, "f", &sha_hex(data), 30, None).await;
    let tampers: Vec<(&str, Tamper)> = vec![
        (
            "policy",
            Box::new(|i| {
                let p = i["policy"].as_str().unwrap().to_string();
                let mut raw =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, p).unwrap();
                let text = String::from_utf8(raw.clone())
                    .unwrap()
                    .replace("\"f\"", "\"g\"");
                raw = text.into_bytes();
                i["policy"] = Value::String(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    raw,
                ));
            }),
        ),
        (
            "key",
            Box::new(|i| {
                i["key"] = Value::String(format!("{CID}/other"));
            }),
        ),
        (
            "signature",
            Box::new(|i| {
                i["x-amz-signature"] = Value::String("00".repeat(32));
            }),
        ),
        (
            "missing",
            Box::new(|i| {
                i.remove("x-amz-date");
            }),
        ),
    ];
    for (what, tamper) in tampers {
        let (status, body) = post_form(&emu, &form, data, tamper).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    }
    assert!(emu.conn().content().list().is_empty());
    // The untouched form still works.
    assert_eq!(
        post_form(&emu, &form, data, |_| {}).await.0,
        StatusCode::NO_CONTENT
    );
}

/// §9 Must: download URLs that expire; delete and delete all (`{}`); `404` for unknown items.
#[tokio::test]
async fn download_urls_expire_and_items_delete() {
    let emu = Emu::start_manual().await;
    for id in ["a", "b"] {
        let form = upload_form(&emu, id, &sha_hex(id.as_bytes()), 30, None).await;
        assert_eq!(
            post_form(&emu, &form, id.as_bytes(), |_| {}).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let r = emu
        .mgmt(
            Method::GET,
            &format!("service/{CID}/content/item/a/download?expires_in=60"),
        )
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["method"], "GET");
    assert_eq!(d["id"], "a");
    let url = d["url"].as_str().unwrap().to_string();
    let r = emu.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "a");
    let r = emu
        .http
        .get(url.replace("signature=", "signature=00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    emu.advance(Duration::from_secs(61));
    let r = emu.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = emu
        .mgmt(
            Method::GET,
            &format!("service/{CID}/content/item/zz/download"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Delete one, then all.
    let r = emu
        .mgmt(Method::DELETE, &format!("service/{CID}/content/item/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    let r = emu
        .mgmt(Method::GET, &format!("service/{CID}/content/item/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["statusCode"], 404);
    let r = emu
        .mgmt(Method::DELETE, &format!("service/{CID}/content/item"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    let ids: Value = emu
        .mgmt(Method::GET, &format!("service/{CID}/content/item"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids, json!([]));
}

/// The object store checks the form before it reads the file (exosite-platform.md §5.5): a
/// form with a wrong signature is refused with `403` while most of the declared file is still
/// to come, so an unauthenticated upload costs no buffer.
#[tokio::test]
async fn an_upload_with_a_bad_form_is_refused_before_its_file_is_read() {
    use crate::raw_http::{read_response, send};

    let emu = Emu::start().await;
    let form = upload_form(&emu, "big.bin", &sha_hex(b"anything"), 30, None).await;
    let mut inputs = form["inputs"].as_object().unwrap().clone();
    inputs.insert("x-amz-signature".into(), json!("00".repeat(32)));
    let boundary = "otau-test-boundary";
    let mut parts = String::new();
    for (name, value) in &inputs {
        parts.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{}\r\n",
            value.as_str().unwrap()
        ));
    }
    parts.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    let file_len = 8 << 20;
    let tail = format!("\r\n--{boundary}--\r\n");
    let url = url::Url::parse(form["url"].as_str().unwrap()).unwrap();
    let addr = url.socket_addrs(|| None).unwrap()[0];
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{parts}",
        url.path(),
        url.host_str().unwrap(),
        parts.len() + file_len + tail.len()
    )
    .into_bytes();
    // The first KiB of an 8 MiB file, and no more.
    request.extend_from_slice(&[0u8; 1024]);
    let mut stream = send(addr, &request).await;
    let answer = read_response(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        answer.as_ref().map(|a| a.status),
        Some(403),
        "no 403 while the file was still to come: {answer:?}"
    );
}
