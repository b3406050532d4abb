//! Images: decoded within pixel and memory limits (a decompression bomb is refused, never an
//! out-of-memory), EXIF orientation applied and metadata (GPS!) dropped from what is stored
//! and served, a thumbnail (longest side at most 320 px) and a ThumbHash made.
//!
//! Decoding is CPU work: it runs on the blocking pool, at most one image per core at a time,
//! so uploads never stall the async runtime and many at once cannot exhaust memory.

use std::io::Cursor;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use tokio::sync::Semaphore;

use super::kinds;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError};

/// Pixels an image may have (a 12-megapixel photo has 12 million; panoramas more).
const MAX_PIXELS: u64 = 64_000_000;
/// Memory one decode may allocate.
const MAX_ALLOC_BYTES: u64 = 512 << 20;
pub const THUMBNAIL_SIDE: u32 = 320;
/// ThumbHash works on images of at most 100×100.
const THUMBHASH_SIDE: u32 = 100;

/// A processed image.
pub struct Processed {
    /// The stored type (an avatar is always JPEG).
    pub mime_type: &'static str,
    /// What is stored and served: oriented, without metadata (GIFs as sent: they carry no
    /// EXIF, and re-encoding would lose animation).
    pub bytes: Bytes,
    pub width: u32,
    pub height: u32,
    pub thumbnail: Bytes,
    pub thumbhash: String,
}

fn workers() -> &'static Semaphore {
    static WORKERS: OnceLock<Semaphore> = OnceLock::new();
    WORKERS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
    })
}

/// Processes an image off the async runtime (waiting for a free worker first); `as_jpeg`
/// stores it as JPEG whatever it was.
pub async fn process(
    mime_type: &'static str,
    as_jpeg: bool,
    bytes: Bytes,
) -> Result<Processed, RpcError> {
    off_runtime(move || process_now(mime_type, as_jpeg, &bytes)).await
}

/// Runs image work on the blocking pool, once a worker is free.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    let _permit = workers()
        .acquire()
        .await
        .map_err(|_| RpcError::internal())?;
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "image processing panicked");
        RpcError::internal()
    })?
}

/// The longest side of an image sent to a model (the original is kept for display).
pub const MODEL_SIDE: u32 = 2048;
/// The most bytes of an image sent to a model: within every provider's limit, the tightest
/// being Anthropic's 5 MB per image, counted in base64 (Gemini: 20 MB per request; OpenAI:
/// 20 MB per image).
pub const MODEL_IMAGE_BYTES: usize = 3_700_000;

/// An image as sent to the models: as stored when it fits (and is JPEG, PNG or WebP, which
/// every provider takes); otherwise a JPEG with the longest side at most `MODEL_SIDE`,
/// smaller still until it fits `MODEL_IMAGE_BYTES`. A GIF becomes its first frame (Gemini
/// takes no GIF).
pub async fn for_model(
    mime_type: String,
    bytes: Bytes,
    max_bytes: usize,
) -> Result<(String, Bytes), RpcError> {
    off_runtime(move || for_model_now(mime_type, bytes, max_bytes)).await
}

/// `max_bytes`: at most `MODEL_IMAGE_BYTES`, less when the request's other files need room.
fn for_model_now(
    mime_type: String,
    bytes: Bytes,
    max_bytes: usize,
) -> Result<(String, Bytes), RpcError> {
    let format = format_of(&mime_type).ok_or_else(unreadable)?;
    if format != ImageFormat::Gif && bytes.len() <= max_bytes {
        let dimensions = ImageReader::with_format(Cursor::new(&bytes), format).into_dimensions();
        if dimensions.is_ok_and(|(width, height)| width.max(height) <= MODEL_SIDE) {
            return Ok((mime_type, bytes));
        }
    }
    let image = decode(&mime_type, &bytes)?;
    let mut side = MODEL_SIDE;
    loop {
        let resized;
        let view = if image.width().max(image.height()) > side {
            resized = image.resize(side, side, image::imageops::FilterType::Lanczos3);
            &resized
        } else {
            &image
        };
        let jpeg = encode_jpeg(view, 85)?;
        if jpeg.len() <= max_bytes || side <= THUMBNAIL_SIDE {
            return Ok(("image/jpeg".to_owned(), jpeg));
        }
        side /= 2;
    }
}

fn unreadable() -> RpcError {
    kinds::mismatch("The image could not be read: its contents are damaged or not an image.")
}

fn format_of(mime_type: &str) -> Option<ImageFormat> {
    match mime_type {
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/webp" => Some(ImageFormat::WebP),
        "image/gif" => Some(ImageFormat::Gif),
        _ => None,
    }
}

/// Decodes within limits, with the orientation its EXIF asks for applied.
pub fn decode(mime_type: &str, bytes: &[u8]) -> Result<DynamicImage, RpcError> {
    let format = format_of(mime_type).ok_or_else(unreadable)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|_| unreadable())?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(RpcError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "The image is {width}×{height} pixels; at most {} megapixels are accepted.",
                MAX_PIXELS / 1_000_000
            ),
        )
        .with_reason(Reason::FileTooLarge));
    }
    let orientation = decoder.orientation().map_err(|_| unreadable())?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|error| match error {
        image::ImageError::Limits(_) => RpcError::new(
            ErrorCode::PayloadTooLarge,
            "The image needs too much memory to decode.",
        )
        .with_reason(Reason::FileTooLarge),
        _ => unreadable(),
    })?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Flattens transparency onto white (for JPEG, which has none).
fn on_white(image: &DynamicImage) -> RgbImage {
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let blend = |channel: u8| {
            let alpha = u16::from(a);
            u8::try_from((u16::from(channel) * alpha + 255 * (255 - alpha)) / 255).unwrap_or(255)
        };
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

pub fn encode_jpeg(image: &DynamicImage, quality: u8) -> Result<Bytes, RpcError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&on_white(image))
        .map_err(|error| {
            tracing::error!(%error, "could not encode a JPEG");
            RpcError::internal()
        })?;
    Ok(out.into())
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Bytes, RpcError> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).map_err(|error| {
        tracing::error!(%error, "could not re-encode an image");
        RpcError::internal()
    })?;
    Ok(out.into_inner().into())
}

fn process_now(
    mime_type: &'static str,
    as_jpeg: bool,
    bytes: &Bytes,
) -> Result<Processed, RpcError> {
    let image = decode(mime_type, bytes)?;
    let mime_type = if as_jpeg { "image/jpeg" } else { mime_type };
    // Re-encoding drops every metadata block (EXIF with GPS, XMP, comments).
    let stored = match mime_type {
        "image/jpeg" => encode_jpeg(&image, 90)?,
        "image/png" => encode(&image, ImageFormat::Png)?,
        "image/webp" => encode(&image, ImageFormat::WebP)?,
        _ => bytes.clone(),
    };
    let thumbnail = encode_jpeg(&image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE), 80)?;
    let small = image.thumbnail(THUMBHASH_SIDE, THUMBHASH_SIDE).to_rgba8();
    let hash = thumbhash::rgba_to_thumb_hash(
        small.width() as usize,
        small.height() as usize,
        small.as_raw(),
    );
    Ok(Processed {
        mime_type,
        bytes: stored,
        width: image.width(),
        height: image.height(),
        thumbnail,
        thumbhash: STANDARD.encode(hash),
    })
}
