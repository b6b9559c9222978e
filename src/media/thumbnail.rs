//! Thumbnails of JPEG, PNG, GIF (first frame) and WebP images, made once per
//! configured size and kept next to the content.
//!
//! Decoding is bounded: the image's dimensions are read from its header first
//! and anything above `media.max_thumbnail_pixels` is refused (413) before a
//! byte of pixels is allocated; the decoder itself gets the same limits. At most
//! two thumbnails are made at a time, on blocking threads, each with a time
//! limit, so a flood of requests cannot starve the server.

use std::{
    io::BufWriter,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::StatusCode;
use image::{ImageFormat, ImageReader, Limits, imageops::FilterType};
use ruma::api::error::ErrorKind;
use tokio::sync::Semaphore;

use crate::{
    config::{MediaConfig, ThumbnailSize},
    error::{Error, Result},
};

/// How long making one thumbnail may take.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// A thumbnail on disk.
#[derive(Debug, Clone)]
pub struct Thumb {
    pub path: PathBuf,
    pub content_type: &'static str,
}

#[derive(Debug)]
pub struct Thumbnailer {
    dir: PathBuf,
    sizes: Vec<ThumbnailSize>,
    max_pixels: u64,
    working: Arc<Semaphore>,
}

impl Thumbnailer {
    pub fn new(dir: PathBuf, config: &MediaConfig) -> Self {
        Self {
            dir,
            sizes: config.thumbnail_sizes.clone(),
            max_pixels: config.max_thumbnail_pixels,
            working: Arc::new(Semaphore::new(2)),
        }
    }

    /// The configured size serving a request: the smallest of the method
    /// that is at least as large as asked, else the largest of the method
    /// (any method when none is configured for this one).
    pub fn choose(&self, width: u32, height: u32, method: &str) -> Option<ThumbnailSize> {
        let same: Vec<&ThumbnailSize> = self.sizes.iter().filter(|s| s.method == method).collect();
        let pool = if same.is_empty() {
            self.sizes.iter().collect()
        } else {
            same
        };
        let area = |s: &&&ThumbnailSize| u64::from(s.width) * u64::from(s.height);
        pool.iter()
            .filter(|s| s.width >= width && s.height >= height)
            .min_by_key(area)
            .or_else(|| pool.iter().max_by_key(area))
            .map(|s| (**s).clone())
    }

    /// The thumbnail of content `sha256` (at `source`) for `size`, made now if
    /// it does not exist yet.
    pub async fn get(&self, source: &Path, sha256: &str, size: &ThumbnailSize) -> Result<Thumb> {
        let base = self
            .dir
            .join(sha256)
            .join(format!("{}x{}-{}", size.width, size.height, size.method));
        for (ext, content_type) in [("png", "image/png"), ("jpg", "image/jpeg")] {
            let path = base.with_extension(ext);
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                return Ok(Thumb { path, content_type });
            }
        }
        let _permit = self
            .working
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the thumbnailer is closed"))?;
        let (source, size, max_pixels) = (source.to_owned(), size.clone(), self.max_pixels);
        let job = tokio::task::spawn_blocking(move || make(&source, &base, &size, max_pixels));
        match tokio::time::timeout(TIME_LIMIT, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::internal(format!("thumbnailing failed: {e}"))),
            Err(_) => Err(cannot_thumbnail("Making the thumbnail took too long")),
        }
    }

    /// Deletes the thumbnails of content that is gone.
    pub fn forget(&self, sha256: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(sha256));
    }
}

fn cannot_thumbnail(message: &str) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
}

/// Reads the image's format and dimensions without decoding it.
pub fn probe(source: &Path) -> Result<(ImageFormat, u32, u32)> {
    let reader = ImageReader::open(source)?
        .with_guessed_format()
        .map_err(|e| cannot_thumbnail(&format!("Cannot read the image: {e}")))?;
    let format = reader
        .format()
        .filter(|f| {
            matches!(
                f,
                ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP
            )
        })
        .ok_or_else(|| cannot_thumbnail("Only JPEG, PNG, GIF and WebP images have thumbnails"))?;
    // Only the header is read here; the size check is the caller's.
    let mut reader = reader;
    reader.no_limits();
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| cannot_thumbnail(&format!("Cannot read the image: {e}")))?;
    Ok((format, w, h))
}

/// Decodes, resizes and writes one thumbnail (temp file, then rename).
fn make(source: &Path, base: &Path, size: &ThumbnailSize, max_pixels: u64) -> Result<Thumb> {
    let (format, w, h) = probe(source)?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!(
                "The image is {w}×{h} pixels, too large to thumbnail (limit {max_pixels} pixels)"
            ),
        ));
    }
    let mut reader = ImageReader::open(source)?
        .with_guessed_format()
        .map_err(|e| cannot_thumbnail(&format!("Cannot read the image: {e}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // Eight bytes per pixel covers 16-bit RGBA; the rest is decoder slack.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| cannot_thumbnail(&format!("Cannot decode the image: {e}")))?;
    let (tw, th) = (size.width, size.height);
    let thumb = if size.method == "crop" {
        image.resize_to_fill(tw, th, FilterType::Triangle)
    } else if image.width() <= tw && image.height() <= th {
        // Never enlarged.
        image
    } else {
        image.resize(tw, th, FilterType::Triangle)
    };
    let (ext, content_type) = if format == ImageFormat::Jpeg {
        ("jpg", "image/jpeg")
    } else {
        ("png", "image/png")
    };
    let path = base.with_extension(ext);
    let dir = path
        .parent()
        .ok_or_else(|| Error::internal("thumbnail path without a folder"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        crate::util::random_string_from(b"abcdef0123456789", 12)
    ));
    let written = (|| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
        if format == ImageFormat::Jpeg {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
            thumb.to_rgb8().write_with_encoder(encoder)?;
        } else {
            thumb.write_to(&mut out, ImageFormat::Png)?;
        }
        std::io::Write::flush(&mut out)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::internal(format!("cannot write a thumbnail: {e}")));
    }
    Ok(Thumb { path, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thumbnailer() -> Thumbnailer {
        Thumbnailer::new(PathBuf::from("/nonexistent"), &MediaConfig::default())
    }

    #[test]
    fn the_smallest_size_at_least_as_large_is_chosen() {
        let t = thumbnailer();
        let pick = |w, h, m| {
            let s = t.choose(w, h, m).unwrap();
            (s.width, s.height, s.method)
        };
        assert_eq!(pick(64, 64, "crop"), (96, 96, "crop".into()));
        assert_eq!(pick(10, 10, "crop"), (32, 32, "crop".into()));
        assert_eq!(pick(300, 200, "scale"), (320, 240, "scale".into()));
        assert_eq!(pick(700, 500, "scale"), (800, 600, "scale".into()));
        assert_eq!(
            pick(4000, 4000, "scale"),
            (800, 600, "scale".into()),
            "else the largest"
        );
    }
}
