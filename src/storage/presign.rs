//! Presigned S3 PUTs (SigV4, query-string authentication) that sign the content type, the
//! length and the `x-amz-checksum-sha256` header, so the bucket itself accepts exactly the
//! declared bytes: the same contract as this server's local upload links.
//! (`object_store`'s own signer signs only the host, hence this.)

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use object_store::aws::AwsCredentialProvider;
use sha2::{Digest, Sha256};

use super::StorageError;
use super::signing::Upload;

pub(super) struct S3Presigner {
    pub credentials: AwsCredentialProvider,
    pub region: String,
    /// `scheme://host[:port]`, without the bucket.
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub virtual_hosted_style: bool,
}

/// A presigned PUT: send `headers` exactly.
pub struct PresignedPut {
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

/// RFC 3986 unreserved characters stay; everything else is %XX (SigV4's URI encoding).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

impl S3Presigner {
    pub async fn presign_put(
        &self,
        upload: &Upload<'_>,
        now: DateTime<Utc>,
    ) -> Result<PresignedPut, StorageError> {
        let credential = self.credentials.get_credential().await?;
        let (scheme, authority) = self
            .endpoint
            .split_once("://")
            .unwrap_or(("https", &self.endpoint));
        let full_key = if self.prefix.is_empty() {
            upload.key.to_owned()
        } else {
            format!("{}/{}", self.prefix, upload.key)
        };
        let (host, path) = if self.virtual_hosted_style {
            (
                format!("{}.{authority}", self.bucket),
                format!("/{}", uri_encode(&full_key, true)),
            )
        } else {
            (
                authority.to_owned(),
                format!(
                    "/{}/{}",
                    uri_encode(&self.bucket, false),
                    uri_encode(&full_key, true)
                ),
            )
        };
        let date = now.format("%Y%m%d").to_string();
        let timestamp = now.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let expires = (upload.expires_at - now).num_seconds().clamp(1, 604_800);
        let signed_headers = "content-length;content-type;host;x-amz-checksum-sha256";
        let mut query = BTreeMap::from([
            ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
            (
                "X-Amz-Credential".to_owned(),
                format!("{}/{scope}", credential.key_id),
            ),
            ("X-Amz-Date".to_owned(), timestamp.clone()),
            ("X-Amz-Expires".to_owned(), expires.to_string()),
            ("X-Amz-SignedHeaders".to_owned(), signed_headers.to_owned()),
        ]);
        if let Some(token) = &credential.token {
            query.insert("X-Amz-Security-Token".to_owned(), token.clone());
        }
        let canonical_query = query
            .iter()
            .map(|(name, value)| {
                format!("{}={}", uri_encode(name, false), uri_encode(value, false))
            })
            .collect::<Vec<_>>()
            .join("&");
        let canonical_request = format!(
            "PUT\n{path}\n{canonical_query}\ncontent-length:{}\ncontent-type:{}\nhost:{host}\nx-amz-checksum-sha256:{}\n\n{signed_headers}\nUNSIGNED-PAYLOAD",
            upload.size, upload.content_type, upload.sha256
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let key = [date.as_str(), &self.region, "s3", "aws4_request"]
            .iter()
            .fold(
                format!("AWS4{}", credential.secret_key).into_bytes(),
                |key, part| hmac(&key, part),
            );
        let signature = hex(&hmac(&key, &string_to_sign));
        Ok(PresignedPut {
            url: format!("{scheme}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"),
            headers: BTreeMap::from([
                ("Content-Type".to_owned(), upload.content_type.to_owned()),
                ("x-amz-checksum-sha256".to_owned(), upload.sha256.to_owned()),
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_sigv4_wants() {
        assert_eq!(uri_encode("files/a b/c+d", true), "files/a%20b/c%2Bd");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
