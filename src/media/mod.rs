//! The media repository: uploads stored once per content, thumbnails, URL
//! previews, retention.
//!
//! Files live under `<data_dir>/media/`: `content/ab/cd/<sha256>` holds each
//! distinct content once, `thumbnails/<sha256>/` the thumbnails made of it,
//! `tmp/` uploads in progress. An upload is streamed into a temporary file
//! (hashed and counted as it arrives, refused as soon as it passes the size
//! limit) and renamed into place only when complete, so no partial file is
//! ever served. Metadata (type, name, uploader, which content) is in RocksDB;
//! a content file is deleted when no media id refers to it any more.

pub mod iprange;
pub mod preview;
pub mod thumbnail;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use parking_lot::Mutex;
use ring::digest;
use ruma::{OwnedServerName, OwnedUserId, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{
    config::MediaConfig,
    error::{Error, Result},
    storage::{Engine, MEDIAID_MEDIA, Raw, SHA256MEDIAID_, USERIDMEDIAID_, prefix},
    util::{ALPHANUMERIC, hex, now_ms, random_string_from},
};

/// Length of generated media ids.
const MEDIA_ID_LEN: usize = 24;

fn random_string(len: usize) -> String {
    random_string_from(ALPHANUMERIC, len)
}

/// What is known about one media id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The content's SHA-256 (hex); `None` while an async upload is pending.
    pub sha256: Option<String>,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub uploader: OwnedUserId,
    pub created_ms: u64,
    /// For a pending async upload: when the id expires unused.
    #[serde(default)]
    pub pending_until_ms: Option<u64>,
}

impl MediaRecord {
    pub fn is_pending(&self) -> bool {
        self.sha256.is_none()
    }
}

/// A media id created for an async upload.
#[derive(Debug)]
pub struct Pending {
    pub media_id: String,
    pub expires_ms: u64,
}

#[derive(Debug)]
pub struct Media {
    db: Engine,
    root: PathBuf,
    server_name: OwnedServerName,
    pub config: MediaConfig,
    /// Serialises linking content to ids against deleting unreferenced content.
    content_lock: Mutex<()>,
    /// Async uploads in progress, so two PUTs to one id cannot race.
    uploading: Mutex<std::collections::HashSet<String>>,
    pub thumbnails: thumbnail::Thumbnailer,
    pub previews: preview::Previews,
}

impl Media {
    pub fn open(
        db: Engine,
        data_dir: &Path,
        server_name: OwnedServerName,
        config: MediaConfig,
    ) -> Result<Arc<Self>> {
        let root = data_dir.join("media");
        for dir in ["content", "thumbnails", "tmp"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", root.display())))?;
        }
        // Whatever is in tmp/ was an upload cut off by a stop.
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let thumbnails = thumbnail::Thumbnailer::new(root.join("thumbnails"), &config);
        let previews = preview::Previews::new(&config.url_preview);
        Ok(Arc::new(Self {
            db,
            root,
            server_name,
            config,
            content_lock: Mutex::new(()),
            uploading: Mutex::new(Default::default()),
            thumbnails,
            previews,
        }))
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn record(&self, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self
            .db
            .get(MEDIAID_MEDIA, &media_id.to_owned())?
            .and_then(|Raw(bytes)| serde_json::from_slice(&bytes).ok()))
    }

    /// The file holding a record's content.
    pub fn content_path(&self, sha256: &str) -> PathBuf {
        let (a, b) = (&sha256[..2], &sha256[2..4]);
        self.root.join("content").join(a).join(b).join(sha256)
    }

    /// Refuses a declared length above the limit before reading anything.
    pub fn check_declared_length(&self, length: Option<u64>) -> Result<()> {
        match length {
            Some(n) if n > self.config.max_upload_size => Err(self.too_large()),
            _ => Ok(()),
        }
    }

    fn too_large(&self) -> Error {
        Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!(
                "The upload is larger than the limit of {} bytes",
                self.config.max_upload_size
            ),
        )
    }

    /// `POST /upload`: stores the body under a new media id.
    pub async fn upload<S, E>(
        &self,
        uploader: &UserId,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<String>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (sha256, size) = self.receive(body).await?;
        let media_id = random_string(MEDIA_ID_LEN);
        let record = MediaRecord {
            sha256: Some(sha256),
            size,
            content_type,
            filename,
            uploader: uploader.to_owned(),
            created_ms: now_ms(),
            pending_until_ms: None,
        };
        self.link(&media_id, &record)?;
        Ok(media_id)
    }

    /// `POST /media/v1/create`: a media id to upload to later.
    pub fn create_pending(&self, uploader: &UserId) -> Result<Pending> {
        let now = now_ms();
        let mut pending = 0usize;
        let mut oldest_expiry = u64::MAX;
        for ((_, id), ()) in self
            .db
            .scan_prefix(USERIDMEDIAID_, &prefix(&(uploader.to_owned(),)))?
        {
            if let Some(record) = self.record(&id)?
                && let Some(until) = record.pending_until_ms
                && record.is_pending()
                && until > now
            {
                pending += 1;
                oldest_expiry = oldest_expiry.min(until);
            }
        }
        if pending >= self.config.max_pending_uploads {
            let mut data = ruma::api::error::LimitExceededErrorData::new();
            data.retry_after = Some(ruma::api::error::RetryAfter::Delay(Duration::from_millis(
                oldest_expiry.saturating_sub(now),
            )));
            return Err(Error::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::LimitExceeded(data),
                format!(
                    "You have {pending} media ids waiting for their upload; upload to them or wait"
                ),
            ));
        }
        let media_id = random_string(MEDIA_ID_LEN);
        let expires_ms = now + self.config.pending_upload_expiry_ms;
        let record = MediaRecord {
            sha256: None,
            size: 0,
            content_type: None,
            filename: None,
            uploader: uploader.to_owned(),
            created_ms: now,
            pending_until_ms: Some(expires_ms),
        };
        let mut batch = self.db.batch();
        batch.put(MEDIAID_MEDIA, &media_id, &Raw(serde_json::to_vec(&record)?));
        batch.put(
            USERIDMEDIAID_,
            &(uploader.to_owned(), media_id.clone()),
            &(),
        );
        batch.commit()?;
        Ok(Pending {
            media_id,
            expires_ms,
        })
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the upload to a created id.
    pub async fn upload_pending<S, E>(
        &self,
        uploader: &UserId,
        media_id: &str,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let record = self
            .record(media_id)?
            .ok_or_else(|| Error::not_found("No such media id"))?;
        if record.uploader != uploader {
            return Err(Error::forbidden(
                "This media id was created by another user",
            ));
        }
        if !record.is_pending() {
            return Err(cannot_overwrite());
        }
        if record
            .pending_until_ms
            .is_some_and(|until| until <= now_ms())
        {
            return Err(Error::not_found("This media id expired without an upload"));
        }
        if !self.uploading.lock().insert(media_id.to_owned()) {
            return Err(cannot_overwrite());
        }
        let result = async {
            let (sha256, size) = self.receive(body).await?;
            let _linking = self.content_lock.lock();
            // Re-read: the id may have expired and been swept meanwhile.
            if self.record(media_id)?.is_none_or(|r| !r.is_pending()) {
                return Err(cannot_overwrite());
            }
            let record = MediaRecord {
                sha256: Some(sha256),
                size,
                content_type,
                filename,
                pending_until_ms: None,
                ..record
            };
            self.link_locked(media_id, &record)
        }
        .await;
        self.uploading.lock().remove(media_id);
        result
    }

    /// Waits (up to `timeout`) for a pending id's upload; `None` if unknown.
    pub async fn wait_uploaded(
        &self,
        media_id: &str,
        timeout: Duration,
    ) -> Result<Option<MediaRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut watch = self.db.watch(MEDIAID_MEDIA, media_id.as_bytes().to_vec());
            let Some(record) = self.record(media_id)? else {
                return Ok(None);
            };
            if !record.is_pending() {
                return Ok(Some(record));
            }
            if record
                .pending_until_ms
                .is_some_and(|until| until <= now_ms())
            {
                return Ok(None);
            }
            if tokio::time::timeout_at(deadline, watch.changed())
                .await
                .is_err()
            {
                return Err(Error::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::NotYetUploaded,
                    "The media has not been uploaded yet",
                ));
            }
        }
    }

    /// Streams `body` into a temporary file, hashing it; moves it into the
    /// content store. Returns (sha256 hex, size).
    async fn receive<S, E>(&self, mut body: S) -> Result<(String, u64)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.root.join("tmp").join(random_string(16));
        let outcome = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hash = digest::Context::new(&digest::SHA256);
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| Error::bad_json(format!("The upload was cut off: {e}")))?;
                size += chunk.len() as u64;
                if size > self.config.max_upload_size {
                    return Err(self.too_large());
                }
                hash.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            file.sync_all().await?;
            let sha256 = hex(hash.finish().as_ref());
            Ok((sha256, size))
        }
        .await;
        match outcome {
            Ok((sha256, size)) => {
                let path = self.content_path(&sha256);
                let placed = async {
                    if let Some(dir) = path.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    if tokio::fs::try_exists(&path).await? {
                        // The same bytes are stored already.
                        tokio::fs::remove_file(&tmp).await?;
                    } else {
                        tokio::fs::rename(&tmp, &path).await?;
                    }
                    Ok::<_, std::io::Error>(())
                }
                .await;
                if let Err(e) = placed {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e.into());
                }
                Ok((sha256, size))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    fn link(&self, media_id: &str, record: &MediaRecord) -> Result<()> {
        let _linking = self.content_lock.lock();
        self.link_locked(media_id, record)
    }

    /// Writes a record and its indexes; the content file must exist (it is
    /// checked under the lock that deletion takes too).
    fn link_locked(&self, media_id: &str, record: &MediaRecord) -> Result<()> {
        let Some(sha256) = &record.sha256 else {
            return Err(Error::internal("linking media without content"));
        };
        if !self.content_path(sha256).exists() {
            return Err(Error::internal("the uploaded content disappeared"));
        }
        let mut batch = self.db.batch();
        batch.put(
            MEDIAID_MEDIA,
            &media_id.to_owned(),
            &Raw(serde_json::to_vec(record)?),
        );
        batch.put(
            USERIDMEDIAID_,
            &(record.uploader.clone(), media_id.to_owned()),
            &(),
        );
        batch.put(SHA256MEDIAID_, &(sha256.clone(), media_id.to_owned()), &());
        batch.commit()
    }

    /// Deletes one media id; its content goes when nothing else refers to it.
    pub fn delete(&self, media_id: &str) -> Result<bool> {
        let Some(record) = self.record(media_id)? else {
            return Ok(false);
        };
        let _linking = self.content_lock.lock();
        let mut batch = self.db.batch();
        batch.delete(MEDIAID_MEDIA, &media_id.to_owned());
        batch.delete(
            USERIDMEDIAID_,
            &(record.uploader.clone(), media_id.to_owned()),
        );
        if let Some(sha256) = &record.sha256 {
            batch.delete(SHA256MEDIAID_, &(sha256.clone(), media_id.to_owned()));
        }
        batch.commit()?;
        if let Some(sha256) = &record.sha256 {
            let others = self.db.scan_from(
                SHA256MEDIAID_,
                &prefix(&(sha256.clone(),)),
                &prefix(&(sha256.clone(),)),
                1,
            )?;
            if others.is_empty() {
                let _ = std::fs::remove_file(self.content_path(sha256));
                self.thumbnails.forget(sha256);
            }
        }
        Ok(true)
    }

    /// Deletes every media id a user uploaded (admin command). Returns how many.
    pub fn delete_user_media(&self, user: &UserId) -> Result<usize> {
        let ids = self
            .db
            .scan_prefix(USERIDMEDIAID_, &prefix(&(user.to_owned(),)))?;
        let mut deleted = 0;
        for ((_, id), ()) in ids {
            deleted += usize::from(self.delete(&id)?);
        }
        Ok(deleted)
    }

    /// Applies retention: expired pending ids, media older than
    /// `retention_max_age_ms`, then the oldest media while the store is over
    /// `max_total_bytes`. Returns how many ids were deleted.
    pub fn sweep(&self) -> Result<usize> {
        let now = now_ms();
        let max_age = self.config.retention_max_age_ms;
        let mut live: Vec<(u64, String, Option<String>, u64)> = Vec::new();
        let mut doomed = Vec::new();
        for row in self.db.iter(MEDIAID_MEDIA, &[], &[], true) {
            let (id, Raw(bytes)) = row?;
            let Ok(record) = serde_json::from_slice::<MediaRecord>(&bytes) else {
                continue;
            };
            let expired_pending =
                record.is_pending() && record.pending_until_ms.is_some_and(|until| until <= now);
            let too_old = max_age > 0 && now.saturating_sub(record.created_ms) > max_age;
            if expired_pending || too_old {
                doomed.push(id);
            } else {
                live.push((record.created_ms, id, record.sha256, record.size));
            }
        }
        let budget = self.config.max_total_bytes;
        if budget > 0 {
            live.sort();
            // Distinct content counts once; deleting an id frees its bytes
            // only when it is the last one referring to them.
            let mut refs: std::collections::HashMap<String, (usize, u64)> = Default::default();
            for (_, _, sha, size) in &live {
                if let Some(sha) = sha {
                    let entry = refs.entry(sha.clone()).or_insert((0, *size));
                    entry.0 += 1;
                }
            }
            let mut total: u64 = refs.values().map(|(_, size)| size).sum();
            for (_, id, sha, _) in live {
                if total <= budget {
                    break;
                }
                if let Some(sha) = sha
                    && let Some(entry) = refs.get_mut(&sha)
                {
                    entry.0 -= 1;
                    if entry.0 == 0 {
                        total = total.saturating_sub(entry.1);
                    }
                }
                doomed.push(id);
            }
        }
        let mut deleted = 0;
        for id in doomed {
            deleted += usize::from(self.delete(&id)?);
        }
        Ok(deleted)
    }
}

fn cannot_overwrite() -> Error {
    Error::new(
        StatusCode::CONFLICT,
        ErrorKind::CannotOverwriteMedia,
        "Media has already been uploaded to this id",
    )
}

/// Whether a browser may show this type inline: images, audio and video it
/// plays itself, and plain text. Anything else (HTML, SVG, scripts) is
/// served as an attachment so it cannot run in the server's origin.
pub fn is_inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    const SAFE: &[&str] = &[
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    ];
    SAFE.contains(&essence.as_str())
}
