//! Links this server answers, signed with HMAC-SHA256 over everything they promise: the
//! object key, the expiry and, for downloads, the type and name served; for uploads, the
//! exact type, size and SHA-256 the bytes must have.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::master_key::MasterKey;

/// Where links are answered: `/storage/<key>?…`.
pub(super) const ROUTE_PREFIX: &str = "/storage/";

/// How long a link works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    At(DateTime<Utc>),
    /// For content that never changes under its key (avatars: a new picture has a new key), so
    /// the link stays the same and caches keep it; it stops working when the object is deleted.
    Never,
}

impl Expiry {
    fn encode(self) -> String {
        match self {
            Self::At(at) => at.timestamp().to_string(),
            Self::Never => "never".to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        if text == "never" {
            return Some(Self::Never);
        }
        let seconds = text.parse().ok()?;
        DateTime::from_timestamp(seconds, 0).map(Self::At)
    }
}

/// What a download link serves.
pub struct Download<'a> {
    pub key: &'a str,
    /// The stored (sniffed) type, sent as `Content-Type`.
    pub content_type: &'a str,
    /// Offered as the file's name in `Content-Disposition`.
    pub filename: &'a str,
    pub expiry: Expiry,
}

/// What an upload link accepts: exactly these bytes.
pub struct Upload<'a> {
    pub key: &'a str,
    pub content_type: &'a str,
    pub size: u64,
    /// SHA-256 of the bytes, base64 (as S3's `x-amz-checksum-sha256`).
    pub sha256: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// A verified download request.
pub(super) struct SignedDownload {
    pub key: String,
    pub content_type: String,
    pub filename: String,
    pub expiry: Expiry,
}

/// A verified upload request.
pub(super) struct SignedUpload {
    pub key: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

pub(super) struct UrlSigner {
    mac: Hmac<Sha256>,
}

/// Why a link was refused.
pub(super) enum LinkError {
    /// Not signed by us, or altered.
    Forged,
    Expired,
}

impl UrlSigner {
    pub fn new(key: &MasterKey) -> Self {
        // HMAC accepts keys of any length: this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { mac }
    }

    fn mac_of(&self, fields: &[&str]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        for field in fields {
            // Length-prefixed, so no two field lists sign alike.
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    fn sign(&self, fields: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac_of(fields).finalize().into_bytes())
    }

    /// Compares in constant time.
    fn verify(&self, fields: &[&str], signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|signature| self.mac_of(fields).verify_slice(&signature).is_ok())
    }

    pub fn download_path(&self, download: &Download<'_>) -> String {
        let expires = download.expiry.encode();
        let signature = self.sign(&[
            "GET",
            download.key,
            &expires,
            download.content_type,
            download.filename,
        ]);
        format!(
            "{ROUTE_PREFIX}{}?{}",
            download.key,
            query(&[
                ("expires", &expires),
                ("type", download.content_type),
                ("name", download.filename),
                ("signature", &signature),
            ])
        )
    }

    pub fn upload_path(&self, upload: &Upload<'_>) -> String {
        let expires = Expiry::At(upload.expires_at).encode();
        let size = upload.size.to_string();
        let signature = self.sign(&[
            "PUT",
            upload.key,
            &expires,
            upload.content_type,
            &size,
            upload.sha256,
        ]);
        format!(
            "{ROUTE_PREFIX}{}?{}",
            upload.key,
            query(&[
                ("expires", &expires),
                ("type", upload.content_type),
                ("size", &size),
                ("sha256", upload.sha256),
                ("signature", &signature),
            ])
        )
    }

    pub fn check_download(
        &self,
        key: &str,
        query: &HashMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<SignedDownload, LinkError> {
        let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        let (expires, content_type, filename) = (field("expires"), field("type"), field("name"));
        if !self.verify(
            &["GET", key, expires, content_type, filename],
            field("signature"),
        ) {
            return Err(LinkError::Forged);
        }
        let expiry = Expiry::decode(expires).ok_or(LinkError::Forged)?;
        if matches!(expiry, Expiry::At(at) if at <= now) {
            return Err(LinkError::Expired);
        }
        Ok(SignedDownload {
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            filename: filename.to_owned(),
            expiry,
        })
    }

    pub fn check_upload(
        &self,
        key: &str,
        query: &HashMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<SignedUpload, LinkError> {
        let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        let (expires, content_type, size, sha256) = (
            field("expires"),
            field("type"),
            field("size"),
            field("sha256"),
        );
        if !self.verify(
            &["PUT", key, expires, content_type, size, sha256],
            field("signature"),
        ) {
            return Err(LinkError::Forged);
        }
        match Expiry::decode(expires) {
            Some(Expiry::At(at)) if at > now => {}
            Some(Expiry::At(_)) => return Err(LinkError::Expired),
            _ => return Err(LinkError::Forged),
        }
        Ok(SignedUpload {
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            size: size.parse().map_err(|_| LinkError::Forged)?,
            sha256: sha256.to_owned(),
        })
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> (String, HashMap<String, String>) {
        let (key, query) = path
            .strip_prefix(ROUTE_PREFIX)
            .and_then(|rest| rest.split_once('?'))
            .unwrap_or_default();
        let query = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        (key.to_owned(), query)
    }

    #[test]
    fn links_verify_only_unaltered_and_unexpired() {
        let signer = UrlSigner::new(&MasterKey::from_bytes([3; 32]));
        let now = Utc::now();
        let path = signer.download_path(&Download {
            key: "u/f",
            content_type: "image/png",
            filename: "a b.png",
            expiry: Expiry::At(now + chrono::Duration::seconds(60)),
        });
        let (key, mut query) = parse(&path);
        assert!(signer.check_download(&key, &query, now).is_ok());
        assert!(matches!(
            signer.check_download(&key, &query, now + chrono::Duration::seconds(61)),
            Err(LinkError::Expired)
        ));
        assert!(signer.check_download("u/g", &query, now).is_err());
        query.insert("type".to_owned(), "text/html".to_owned());
        assert!(matches!(
            signer.check_download(&key, &query, now),
            Err(LinkError::Forged)
        ));
        let other = UrlSigner::new(&MasterKey::from_bytes([4; 32]));
        let (key, query) = parse(&path);
        assert!(other.check_download(&key, &query, now).is_err());
    }
}
