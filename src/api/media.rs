//! The media endpoints: authenticated (`/_matrix/client/v1/media/...`) and
//! the legacy `/_matrix/media/v3/...` ones.
//!
//! Unlike the other handlers these do not parse through ruma request types:
//! ruma's media requests hold the whole body and response in memory, while
//! uploads and downloads here stream between the socket and the file, so an
//! upload larger than the limit is refused after reading at most the limit,
//! and a download of any size costs a buffer.

use std::{collections::HashMap, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{AppState, ruma::authenticate};
use crate::{
    error::{Error, Result},
    media::{MediaRecord, is_inline_safe},
};

/// How long a download of a pending async upload waits by default, and at most.
const DEFAULT_WAIT_MS: u64 = 20_000;
const MAX_WAIT_MS: u64 = 120_000;

/// Bytes read from a file per chunk of a download.
const READ_CHUNK: usize = 256 * 1024;

/// Sandboxes media opened directly in a browser: no scripts, no plugins.
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/media/v1/create", post(create))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(upload_to),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download_named),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(thumbnail),
        )
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/preview_url", get(preview_url))
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(legacy_download),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(legacy_download_named),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(legacy_thumbnail),
        )
        .route("/_matrix/media/v3/config", get(config))
        .route("/_matrix/media/v3/preview_url", get(preview_url))
}

/// Only this server's media exist here (remote media needs federation).
fn check_local(s: &AppState, server_name: &str) -> Result<()> {
    if server_name != s.config.server_name.as_str() {
        return Err(Error::not_found(format!(
            "Media from {server_name} is not available on this server"
        )));
    }
    Ok(())
}

fn content_type_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn mxc(s: &AppState, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", s.config.server_name)
}

async fn upload(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let me = authenticate(&s, &parts)?;
    s.media
        .check_declared_length(declared_length(&parts.headers))?;
    let stream = body.into_data_stream();
    let media_id = s
        .media
        .upload(
            &me.user_id,
            content_type_of(&parts.headers),
            query.get("filename").cloned(),
            stream,
        )
        .await?;
    Ok(Json(json!({ "content_uri": mxc(&s, &media_id) })).into_response())
}

async fn create(State(s): State<AppState>, request: Request) -> Result<Response> {
    let (parts, _) = request.into_parts();
    let me = authenticate(&s, &parts)?;
    let pending = s.media.create_pending(&me.user_id)?;
    Ok(Json(json!({
        "content_uri": mxc(&s, &pending.media_id),
        "unused_expires_at": pending.expires_ms,
    }))
    .into_response())
}

async fn upload_to(
    State(s): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let me = authenticate(&s, &parts)?;
    if server_name != s.config.server_name.as_str() {
        return Err(Error::forbidden(
            "Uploads go to media ids of this server only",
        ));
    }
    s.media
        .check_declared_length(declared_length(&parts.headers))?;
    s.media
        .upload_pending(
            &me.user_id,
            &media_id,
            content_type_of(&parts.headers),
            query.get("filename").cloned(),
            body.into_data_stream(),
        )
        .await?;
    Ok(Json(json!({})).into_response())
}

async fn config(State(s): State<AppState>, request: Request) -> Result<Response> {
    let (parts, _) = request.into_parts();
    authenticate(&s, &parts)?;
    Ok(Json(json!({ "m.upload.size": s.media.config.max_upload_size })).into_response())
}

async fn preview_url(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response> {
    let (parts, _) = request.into_parts();
    let me = authenticate(&s, &parts)?;
    let url = query
        .get("url")
        .ok_or_else(|| Error::missing_param("The url parameter is required"))?;
    let preview = s.media.previews.preview(&s.media, &me.user_id, url).await?;
    Ok(Json(preview).into_response())
}

/// The record of a local media id, waiting for a pending upload.
async fn uploaded(
    s: &AppState,
    server_name: &str,
    media_id: &str,
    query: &HashMap<String, String>,
) -> Result<MediaRecord> {
    check_local(s, server_name)?;
    let wait = query
        .get("timeout_ms")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(DEFAULT_WAIT_MS)
        .min(MAX_WAIT_MS);
    s.media
        .wait_uploaded(media_id, Duration::from_millis(wait))
        .await?
        .ok_or_else(|| Error::not_found("No such media"))
}

async fn download(
    State(s): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response> {
    let (parts, _) = request.into_parts();
    authenticate(&s, &parts)?;
    serve_download(&s, &server_name, &media_id, None, &query, &parts.headers).await
}

async fn download_named(
    State(s): State<AppState>,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response> {
    let (parts, _) = request.into_parts();
    authenticate(&s, &parts)?;
    let name = Some(file_name.as_str());
    serve_download(&s, &server_name, &media_id, name, &query, &parts.headers).await
}

fn check_legacy(s: &AppState) -> Result<()> {
    if !s.media.config.legacy_unauthenticated {
        return Err(Error::not_found(
            "Unauthenticated media downloads are disabled; use /_matrix/client/v1/media",
        ));
    }
    Ok(())
}

async fn legacy_download(
    State(s): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response> {
    check_legacy(&s)?;
    serve_download(&s, &server_name, &media_id, None, &query, &headers).await
}

async fn legacy_download_named(
    State(s): State<AppState>,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response> {
    check_legacy(&s)?;
    let name = Some(file_name.as_str());
    serve_download(&s, &server_name, &media_id, name, &query, &headers).await
}

async fn serve_download(
    s: &AppState,
    server_name: &str,
    media_id: &str,
    file_name: Option<&str>,
    query: &HashMap<String, String>,
    request_headers: &HeaderMap,
) -> Result<Response> {
    let record = uploaded(s, server_name, media_id, query).await?;
    let sha = record
        .sha256
        .as_deref()
        .ok_or_else(|| Error::not_found("No such media"))?;
    let content_type = record
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    let name = file_name.map(str::to_owned).or(record.filename.clone());
    let path = s.media.content_path(sha);
    serve_file(&path, &content_type, name.as_deref(), request_headers).await
}

/// Streams a file with the media headers, honouring one `Range`.
async fn serve_file(
    path: &std::path::Path,
    content_type: &str,
    file_name: Option<&str>,
    request_headers: &HeaderMap,
) -> Result<Response> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|_| Error::not_found("The media's content is missing"))?;
    let size = file.metadata().await?.len();
    let range = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Wanted::Whole, |r| parse_range(r, size));
    let mut response = Response::builder();
    let headers = response
        .headers_mut()
        .ok_or_else(|| Error::internal("response builder"))?;
    media_headers(headers, content_type, file_name);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, start, len) = match range {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part(start, end) => {
            let value = format!("bytes {start}-{end}/{size}");
            headers.insert(header::CONTENT_RANGE, header_value(&value));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Wanted::Unsatisfiable => {
            let value = format!("bytes */{size}");
            headers.insert(header::CONTENT_RANGE, header_value(&value));
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, header_value(&value))],
            )
                .into_response());
        }
    };
    headers.insert(header::CONTENT_LENGTH, header_value(&len.to_string()));
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    // Large reads: the default 4 KiB chunks cost a quarter of the throughput.
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK);
    response
        .status(status)
        .body(Body::from_stream(stream))
        .map_err(|e| Error::internal(format!("building the response: {e}")))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Content-Type, Content-Disposition (inline only for safe types), the CSP
/// sandbox, and cross-origin embedding for web clients.
fn media_headers(headers: &mut HeaderMap, content_type: &str, file_name: Option<&str>) {
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let inline = content_type.to_str().is_ok_and(is_inline_safe);
    headers.insert(header::CONTENT_TYPE, content_type);
    let mut disposition = if inline { "inline" } else { "attachment" }.to_owned();
    if let Some(name) = file_name.filter(|n| !n.is_empty()) {
        disposition.push_str(&format!("; filename*=utf-8''{}", encode_rfc5987(name)));
    }
    headers.insert(header::CONTENT_DISPOSITION, header_value(&disposition));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
}

/// Percent-encodes all but RFC 5987's attr-chars.
fn encode_rfc5987(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a `Range` header asks of a file.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// No usable range: the whole file (a malformed header is ignored).
    Whole,
    /// Bytes start..=end.
    Part(u64, u64),
    /// A range outside the file: 416.
    Unsatisfiable,
}

/// The first `bytes=` range of a file of `size` bytes (several ranges are
/// served as the first).
fn parse_range(header: &str, size: u64) -> Wanted {
    let Some(first) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|spec| spec.split(',').next())
        .and_then(|r| r.trim().split_once('-'))
    else {
        return Wanted::Whole;
    };
    let last = size.checked_sub(1);
    let (start, end) = match (first.0.trim(), first.1.trim()) {
        ("", suffix) => match (suffix.parse::<u64>(), last) {
            (Ok(n), Some(last)) if n > 0 => (size.saturating_sub(n), last),
            (Ok(_), _) => return Wanted::Unsatisfiable,
            (Err(_), _) => return Wanted::Whole,
        },
        (start, end) => {
            let Ok(start) = start.parse::<u64>() else {
                return Wanted::Whole;
            };
            let end = if end.is_empty() {
                last
            } else {
                match end.parse::<u64>() {
                    Ok(end) => last.map(|l| end.min(l)),
                    Err(_) => return Wanted::Whole,
                }
            };
            match end {
                Some(end) => (start, end),
                None => return Wanted::Unsatisfiable,
            }
        }
    };
    if start <= end && start < size {
        Wanted::Part(start, end)
    } else {
        Wanted::Unsatisfiable
    }
}

#[derive(serde::Deserialize)]
struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<String>,
    timeout_ms: Option<String>,
}

async fn thumbnail(
    State(s): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response> {
    let (parts, _) = request.into_parts();
    authenticate(&s, &parts)?;
    serve_thumbnail(&s, &server_name, &media_id, &query, &parts.headers).await
}

async fn legacy_thumbnail(
    State(s): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response> {
    check_legacy(&s)?;
    serve_thumbnail(&s, &server_name, &media_id, &query, &headers).await
}

async fn serve_thumbnail(
    s: &AppState,
    server_name: &str,
    media_id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response> {
    let q: ThumbnailQuery = serde_json::from_value(json!(query))
        .map_err(|e| Error::invalid_param(format!("Bad thumbnail parameters: {e}")))?;
    let dimension = |v: &Option<String>, name: &str| -> Result<u32> {
        v.as_deref()
            .ok_or_else(|| Error::missing_param(format!("{name} is required")))?
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::invalid_param(format!("{name} must be a positive integer")))
    };
    let (width, height) = (
        dimension(&q.width, "width")?,
        dimension(&q.height, "height")?,
    );
    let method = q.method.as_deref().unwrap_or("scale");
    if !matches!(method, "scale" | "crop") {
        return Err(Error::invalid_param("method must be scale or crop"));
    }
    let animated = q.animated.as_deref() == Some("true");
    let mut wait_query = HashMap::new();
    if let Some(t) = q.timeout_ms {
        wait_query.insert("timeout_ms".to_owned(), t);
    }
    let record = uploaded(s, server_name, media_id, &wait_query).await?;
    let sha = record
        .sha256
        .as_deref()
        .ok_or_else(|| Error::not_found("No such media"))?;
    let content_type = record.content_type.clone().unwrap_or_default();
    let source = s.media.content_path(sha);
    // An animated image asked for animated is served as it is: bigd makes
    // still thumbnails only.
    if animated
        && matches!(
            content_type.as_str(),
            "image/gif" | "image/webp" | "image/apng"
        )
    {
        return serve_file(&source, &content_type, None, headers).await;
    }
    let size = s
        .media
        .thumbnails
        .choose(width, height, method)
        .ok_or_else(|| Error::not_found("This server makes no thumbnails"))?;
    let thumb = s.media.thumbnails.get(&source, sha, &size).await?;
    serve_file(&thumb.path, thumb.content_type, None, headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_and_clamped() {
        use Wanted::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=990-2000", 1000), Part(990, 999));
        assert_eq!(parse_range("bytes=0-0,5-9", 1000), Part(0, 0));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("items=0-1", 1000), Whole);
        assert_eq!(parse_range("bytes=x-1", 1000), Whole);
    }

    #[test]
    fn file_names_are_encoded_for_the_header() {
        assert_eq!(encode_rfc5987("cat pic.png"), "cat%20pic.png");
        assert_eq!(encode_rfc5987("фото.jpg"), "%D1%84%D0%BE%D1%82%D0%BE.jpg");
        assert_eq!(encode_rfc5987("a\"b;c"), "a%22b%3Bc");
    }
}
