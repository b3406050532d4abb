//! What a file is, told from its bytes (magic numbers), never from its name or declared type:
//! the allowed kinds, their limits, and whether a declaration matches.

use crate::config::FilesConfig;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError};

/// The types accepted, as stored and served.
pub const ALLOWED_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
];

/// Thumbnails are JPEG (transparency is flattened onto white).
pub const THUMBNAIL_TYPE: &str = "image/jpeg";

const TEXT_TYPES: &[&str] = &["text/plain", "text/markdown", "text/csv"];

/// HEIC/HEIF photos (iPhones' default): recognised, but refused until the server can decode
/// them (no pure-Rust decoder exists; libheif is a C dependency we do not take on yet).
const HEIF_TYPES: &[&str] = &["image/heic", "image/heif", "image/avif"];

pub fn is_image(mime_type: &str) -> bool {
    mime_type.starts_with("image/")
}

/// The most bytes a file of this type may have.
pub fn max_bytes(config: &FilesConfig, mime_type: &str) -> u64 {
    if is_image(mime_type) {
        config.max_image_bytes
    } else {
        config.max_file_bytes
    }
}

pub fn too_large(config: &FilesConfig, mime_type: &str) -> RpcError {
    let (limit, what) = if is_image(mime_type) {
        (config.max_image_bytes, "An image")
    } else {
        (config.max_file_bytes, "A file")
    };
    RpcError::new(
        ErrorCode::PayloadTooLarge,
        format!("{what} may be at most {} MB.", limit / 1_000_000),
    )
    .with_reason(Reason::FileTooLarge)
}

pub fn not_allowed(mime_type: &str) -> RpcError {
    let message = if HEIF_TYPES.contains(&mime_type) {
        "HEIC/HEIF photos cannot be processed yet: send JPEG (on iPhone, Settings › Camera › \
         Formats › Most Compatible, or share the photo as JPEG)."
            .to_owned()
    } else {
        format!(
            "Files of type {mime_type} are not accepted; send JPEG, PNG, WebP or GIF images, \
             PDF, plain text, Markdown or CSV."
        )
    };
    RpcError::bad_request(message).with_reason(Reason::FileTypeNotAllowed)
}

pub fn mismatch(message: impl Into<std::borrow::Cow<'static, str>>) -> RpcError {
    RpcError::bad_request(message).with_reason(Reason::FileContentMismatch)
}

/// Checks a type a client declares (for an upload link), before any byte is seen.
pub fn check_declared(mime_type: &str) -> Result<(), RpcError> {
    if ALLOWED_TYPES.contains(&mime_type) {
        Ok(())
    } else {
        Err(not_allowed(mime_type))
    }
}

/// The type of `bytes`, from their magic numbers; text (UTF-8 without control characters
/// other than line breaks, tabs and form feeds) takes the text type the name or declaration
/// says (Markdown, CSV), else plain text.
pub fn sniff(
    bytes: &[u8],
    filename: &str,
    declared: Option<&str>,
) -> Result<&'static str, RpcError> {
    if let Some(kind) = infer::get(bytes) {
        let found = kind.mime_type();
        return ALLOWED_TYPES
            .iter()
            .find(|allowed| **allowed == found)
            .copied()
            .ok_or_else(|| not_allowed(found));
    }
    if !is_text(bytes) {
        return Err(not_allowed("application/octet-stream"));
    }
    let extension = filename
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    Ok(match (declared, extension.as_deref()) {
        (Some("text/markdown"), _) | (_, Some("md" | "markdown")) => "text/markdown",
        (Some("text/csv"), _) | (_, Some("csv")) => "text/csv",
        _ => "text/plain",
    })
}

fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| {
        !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
    })
}

/// Whether a declared type agrees with the sniffed one (the text types agree among
/// themselves: the name decides between them). An absent or generic declaration agrees.
pub fn agrees(declared: Option<&str>, sniffed: &str) -> bool {
    match declared {
        None | Some("" | "application/octet-stream") => true,
        Some(declared) if TEXT_TYPES.contains(&declared) => TEXT_TYPES.contains(&sniffed),
        Some("image/jpg") => sniffed == "image/jpeg",
        Some(declared) => declared == sniffed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png, "photo.txt", None).ok(), Some("image/png"));
        assert_eq!(
            sniff(b"%PDF-1.7\n", "a", None).ok(),
            Some("application/pdf")
        );
        assert_eq!(
            sniff(b"# Title\n", "notes.md", None).ok(),
            Some("text/markdown")
        );
        assert_eq!(
            sniff(b"a,b\n1,2\n", "x", Some("text/csv")).ok(),
            Some("text/csv")
        );
        assert_eq!(sniff(b"hello", "x.bin", None).ok(), Some("text/plain"));
        assert!(sniff(b"\0\x01\x02binary", "x.txt", None).is_err());
        assert!(sniff(b"MZ\x90\0\x03\0\0\0", "a.exe", None).is_err());
    }

    #[test]
    fn declarations_must_agree() {
        assert!(agrees(Some("text/plain"), "text/markdown"));
        assert!(agrees(None, "image/png"));
        assert!(!agrees(Some("image/png"), "image/jpeg"));
        assert!(!agrees(Some("text/plain"), "application/pdf"));
    }
}
