//! Presigned upload forms and expiring download URLs of the emulator's own object store
//! (exosite-platform.md §5.5). The form's `policy` carries what step 1 decided (id, type,
//! sha256, tags, expiry); `x-amz-signature` is an HMAC-SHA256 over every other input, keyed by
//! a secret the signer draws at start, so step 2 can check that no field was changed.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::content::iso8601_millis;
use super::{OBJECT_DOWNLOAD_PATH, OBJECT_STORE_PATH};

type HmacSha256 = Hmac<Sha256>;

/// The input that carries the signature.
pub const SIGNATURE_FIELD: &str = "x-amz-signature";
/// The input that carries the policy.
pub const POLICY_FIELD: &str = "policy";
/// The form field that carries the file.
pub const FILE_FIELD: &str = "file";

/// What step 1 of an upload decided; base64 JSON in the form's `policy` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPolicy {
    /// Connector id.
    pub connector: String,
    /// Content id.
    pub id: String,
    /// MIME type to store.
    pub content_type: String,
    /// Expected SHA-256 of the file, lowercase hex, if declared.
    pub sha256: Option<String>,
    /// Expected size in bytes, if declared.
    pub length: Option<u64>,
    /// Tags to store with the file.
    pub tags: BTreeMap<String, String>,
    /// The form expires at this time, µs since the epoch.
    pub expires: i64,
}

/// The step 1 answer: `{url, method, inputs, id, field, enctype}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadForm {
    /// Where to POST the form.
    pub url: String,
    /// Always `POST`.
    pub method: String,
    /// Form fields to send unchanged, before the file.
    pub inputs: BTreeMap<String, String>,
    /// Content id.
    pub id: String,
    /// Name of the file field.
    pub field: String,
    /// Always `multipart/form-data`.
    pub enctype: String,
}

/// Why an object store request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Bad, changed or expired form or URL: `403`.
    #[error("{0}")]
    Forbidden(String),
    /// The file does not match the form (sha256, size): `400`.
    #[error("{0}")]
    BadFile(String),
}

impl UploadError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            UploadError::Forbidden(_) => 403,
            UploadError::BadFile(_) => 400,
        }
    }
}

/// Signs and checks upload forms and download URLs.
pub struct UploadSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for UploadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSigner").finish_non_exhaustive()
    }
}

impl UploadSigner {
    /// A signer with a random key.
    pub fn random() -> Self {
        UploadSigner {
            key: rand::random(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    fn sign_fields(&self, fields: &BTreeMap<String, String>) -> HmacSha256 {
        let mut mac = self.mac();
        for (k, v) in fields {
            if k != SIGNATURE_FIELD {
                mac.update(k.as_bytes());
                mac.update(b"\0");
                mac.update(v.as_bytes());
                mac.update(b"\n");
            }
        }
        mac
    }

    /// Builds the presigned POST form for `policy`; `public_url` is the server's base URL.
    pub fn presign(&self, public_url: &str, policy: &UploadPolicy) -> UploadForm {
        let policy_json = serde_json::to_vec(policy).unwrap_or_default();
        let date = amz_date(policy.expires);
        let mut inputs = BTreeMap::from([
            ("x-amz-meta-name".to_string(), policy.id.clone()),
            ("x-amz-date".to_string(), date.clone()),
            (
                "x-amz-credential".to_string(),
                format!("EMULATOR/{}/local/s3/aws4_request", &date[..8]),
            ),
            (
                "x-amz-algorithm".to_string(),
                "AWS4-HMAC-SHA256".to_string(),
            ),
            (
                POLICY_FIELD.to_string(),
                base64::engine::general_purpose::STANDARD.encode(policy_json),
            ),
            (
                "key".to_string(),
                format!("{}/{}", policy.connector, policy.id),
            ),
            ("acl".to_string(), "authenticated-read".to_string()),
        ]);
        let signature = hex::encode(self.sign_fields(&inputs).finalize().into_bytes());
        inputs.insert(SIGNATURE_FIELD.to_string(), signature);
        UploadForm {
            url: format!("{}{}", public_url.trim_end_matches('/'), OBJECT_STORE_PATH),
            method: "POST".into(),
            inputs,
            id: policy.id.clone(),
            field: FILE_FIELD.into(),
            enctype: "multipart/form-data".into(),
        }
    }

    /// Checks the non-file fields of a step 2 form: all signed inputs present and unchanged,
    /// not expired at `now` (µs). Returns the policy.
    pub fn verify_form(
        &self,
        fields: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<UploadPolicy, UploadError> {
        let forbidden = |m: &str| UploadError::Forbidden(m.to_string());
        for required in [
            "x-amz-meta-name",
            "x-amz-date",
            "x-amz-credential",
            "x-amz-algorithm",
            POLICY_FIELD,
            "key",
            "acl",
            SIGNATURE_FIELD,
        ] {
            if !fields.contains_key(required) {
                return Err(UploadError::Forbidden(format!(
                    "form field {required:?} is missing"
                )));
            }
        }
        let signature = hex::decode(&fields[SIGNATURE_FIELD])
            .map_err(|_| forbidden("the form signature is not hex"))?;
        let signed: BTreeMap<String, String> = fields
            .iter()
            .filter(|(k, _)| is_signed_input(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.sign_fields(&signed)
            .verify_slice(&signature)
            .map_err(|_| forbidden("the form signature does not match its fields"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&fields[POLICY_FIELD])
            .map_err(|_| forbidden("the policy is not base64"))?;
        let policy: UploadPolicy =
            serde_json::from_slice(&raw).map_err(|_| forbidden("the policy is not valid"))?;
        if now > policy.expires {
            return Err(UploadError::Forbidden(format!(
                "the upload form expired at {}",
                iso8601_millis(policy.expires)
            )));
        }
        Ok(policy)
    }

    /// An expiring download URL for content `id` of connector `cid`.
    pub fn download_url(&self, public_url: &str, cid: &str, id: &str, expires_secs: i64) -> String {
        let signature = self.download_signature(cid, id, expires_secs);
        let enc: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        format!(
            "{}{}/{cid}/{}?expires={expires_secs}&signature={signature}",
            public_url.trim_end_matches('/'),
            OBJECT_DOWNLOAD_PATH,
            enc.replace('+', "%20"),
        )
    }

    fn download_signature(&self, cid: &str, id: &str, expires_secs: i64) -> String {
        let mut mac = self.mac();
        mac.update(format!("download\0{cid}\0{id}\0{expires_secs}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks a download URL's signature and expiry (`now` in µs).
    pub fn verify_download(
        &self,
        cid: &str,
        id: &str,
        expires_secs: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), UploadError> {
        let sig = hex::decode(signature)
            .map_err(|_| UploadError::Forbidden("the URL signature is not hex".into()))?;
        let mut mac = self.mac();
        mac.update(format!("download\0{cid}\0{id}\0{expires_secs}").as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| UploadError::Forbidden("the URL signature does not match".into()))?;
        if now.div_euclid(1_000_000) > expires_secs {
            return Err(UploadError::Forbidden("the download URL expired".into()));
        }
        Ok(())
    }
}

/// Every field of a form except the file is signed, so an added field is a change too.
fn is_signed_input(name: &str) -> bool {
    name != FILE_FIELD
}

/// `YYYYMMDDTHHMMSSZ` for µs since the epoch.
fn amz_date(micros: i64) -> String {
    let iso = iso8601_millis(micros);
    // 2017-02-14T20:07:52.000Z -> 20170214T200752Z
    let mut out = String::with_capacity(16);
    out.extend(iso[..10].chars().filter(|c| *c != '-'));
    out.push('T');
    out.extend(iso[11..19].chars().filter(|c| *c != ':'));
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(expires: i64) -> UploadPolicy {
        UploadPolicy {
            connector: "c1".into(),
            id: "fw.bin".into(),
            content_type: "application/octet-stream".into(),
            sha256: None,
            length: None,
            tags: BTreeMap::new(),
            expires,
        }
    }

    #[test]
    fn a_form_verifies_until_it_expires_or_is_changed() {
        let s = UploadSigner::random();
        let form = s.presign("http://h", &policy(10_000_000));
        assert_eq!(form.url, "http://h/objectstore/content");
        assert_eq!(form.inputs["x-amz-date"], "19700101T000010Z");
        assert_eq!(
            s.verify_form(&form.inputs, 10_000_000).unwrap(),
            policy(10_000_000)
        );
        assert!(matches!(
            s.verify_form(&form.inputs, 10_000_001),
            Err(UploadError::Forbidden(m)) if m.contains("expired")
        ));
        let mut changed = form.inputs.clone();
        changed.insert("key".into(), "c1/other".into());
        assert!(s.verify_form(&changed, 0).is_err());
        let mut extra = form.inputs.clone();
        extra.insert("x-extra".into(), "1".into());
        assert!(s.verify_form(&extra, 0).is_err());
        let mut missing = form.inputs.clone();
        missing.remove("acl");
        assert!(s.verify_form(&missing, 0).is_err());
        // Another signer (another emulator run) does not accept it.
        assert!(UploadSigner::random().verify_form(&form.inputs, 0).is_err());
    }

    #[test]
    fn download_urls_expire() {
        let s = UploadSigner::random();
        let url = s.download_url("http://h", "c1", "a b", 100);
        assert!(url.starts_with("http://h/objectstore/download/c1/a%20b?expires=100&signature="));
        let sig = url.rsplit_once('=').unwrap().1;
        assert!(
            s.verify_download("c1", "a b", 100, sig, 100_000_000)
                .is_ok()
        );
        assert!(
            s.verify_download("c1", "a b", 100, sig, 101_000_000)
                .is_err()
        );
        assert!(s.verify_download("c1", "a c", 100, sig, 0).is_err());
    }
}
