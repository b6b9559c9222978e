//! The media repository over real HTTP: uploads, downloads, thumbnails,
//! async uploads, limits, ranges, previews, retention.

use std::{io::Cursor, path::PathBuf, time::Duration};

use axum::{Router, response::Redirect, routing::get};
use bytes::Bytes;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::common::*;

fn media_dir(s: &TestServer) -> PathBuf {
    s.services().config.data_dir.join("media")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

async fn upload(
    s: &TestServer,
    who: &Session,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let mut url = format!("{}/_matrix/media/v3/upload", s.base);
    if let Some(name) = filename {
        url.push_str(&format!("?filename={}", urlencode(name)));
    }
    let resp = s
        .http
        .post(url)
        .bearer_auth(&who.token)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn upload_ok(s: &TestServer, who: &Session, content_type: &str, bytes: Vec<u8>) -> String {
    let (status, body) = upload(s, who, content_type, bytes, None).await;
    assert_eq!(status, StatusCode::OK, "upload: {body}");
    let uri = body["content_uri"].as_str().unwrap();
    uri.rsplit('/').next().unwrap().to_owned()
}

async fn download(s: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut req = s.http.get(format!("{}{path}", s.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, _| image::Rgb([(x % 256) as u8, 90, 30]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).unwrap();
    (img.width(), img.height())
}

#[tokio::test]
async fn upload_then_download_returns_the_same_bytes_type_and_safe_headers() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bytes = png(40, 30);
    let (status, body) = upload(&s, &alice, "image/png", bytes.clone(), Some("cat pic.png")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uri = body["content_uri"].as_str().unwrap();
    assert!(uri.starts_with("mxc://localhost/"), "{uri}");
    let id = uri.rsplit('/').next().unwrap();

    let resp = download(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/localhost/{id}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "image/png");
    assert_eq!(
        h[header::CONTENT_DISPOSITION],
        "inline; filename*=utf-8''cat%20pic.png"
    );
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    // A file name in the path wins; the legacy endpoint needs no token.
    let resp = download(
        &s,
        None,
        &format!("/_matrix/media/v3/download/localhost/{id}/other.png"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_DISPOSITION],
        "inline; filename*=utf-8''other.png"
    );
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    // Anything a browser could run is an attachment.
    let html = upload_ok(
        &s,
        &alice,
        "text/html",
        b"<script>alert(1)</script>".to_vec(),
    )
    .await;
    let resp = download(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/localhost/{html}"),
    )
    .await;
    assert_eq!(resp.headers()[header::CONTENT_DISPOSITION], "attachment");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/html");
}

#[tokio::test]
async fn downloads_need_a_token_and_an_existing_local_id() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let id = upload_ok(&s, &alice, "text/plain", b"hi".to_vec()).await;
    let resp = download(
        &s,
        None,
        &format!("/_matrix/client/v1/media/download/localhost/{id}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errcode"],
        "M_MISSING_TOKEN"
    );
    for path in [
        "/_matrix/client/v1/media/download/localhost/nonexistent",
        "/_matrix/client/v1/media/download/other.example/whatever",
        "/_matrix/client/v1/media/thumbnail/localhost/nonexistent?width=32&height=32",
    ] {
        let resp = download(&s, Some(&alice.token), path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["errcode"],
            "M_NOT_FOUND",
            "{path}"
        );
    }
    let (status, config) = s
        .get("/_matrix/client/v1/media/config", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);
    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.11"))
    );
    assert_eq!(
        versions["unstable_features"]["org.matrix.msc3916.stable"],
        true
    );
}

#[tokio::test]
async fn the_same_bytes_are_stored_once_and_survive_a_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let bytes = b"the same bytes".to_vec();
    let a = upload_ok(&s, &alice, "text/plain", bytes.clone()).await;
    let b = upload_ok(&s, &bob, "application/octet-stream", bytes.clone()).await;
    assert_ne!(a, b);
    assert_eq!(files_under(&media_dir(&s).join("content")).len(), 1);

    s.restart().await;
    let alice = s.login_ok("alice").await;
    for (id, ty) in [(&a, "text/plain"), (&b, "application/octet-stream")] {
        let resp = download(
            &s,
            Some(&alice.token),
            &format!("/_matrix/client/v1/media/download/localhost/{id}"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], ty);
        assert_eq!(resp.bytes().await.unwrap(), bytes);
    }

    // Deleting one user's media keeps content another id still uses.
    assert_eq!(
        s.services()
            .media
            .delete_user_media(ruma::user_id!("@bob:localhost"))
            .unwrap(),
        1
    );
    let resp = download(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/localhost/{b}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(files_under(&media_dir(&s).join("content")).len(), 1);
    assert_eq!(
        s.services()
            .media
            .delete_user_media(ruma::user_id!("@alice:localhost"))
            .unwrap(),
        1
    );
    assert!(files_under(&media_dir(&s).join("content")).is_empty());
}

#[tokio::test]
async fn thumbnails_of_png_and_jpeg_have_the_configured_bounds() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let png_id = upload_ok(&s, &alice, "image/png", png(400, 300)).await;
    let jpeg_id = upload_ok(&s, &alice, "image/jpeg", jpeg(1000, 500)).await;
    let thumb =
        |id: &str, q: &str| format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?{q}");
    for (id, query, ty, dims) in [
        (
            &png_id,
            "width=64&height=64&method=crop",
            "image/png",
            (96, 96),
        ),
        (
            &png_id,
            "width=300&height=200&method=scale",
            "image/png",
            (320, 240),
        ),
        (&png_id, "width=700&height=500", "image/png", (400, 300)), // never enlarged
        (
            &jpeg_id,
            "width=640&height=480&method=scale",
            "image/jpeg",
            (640, 320),
        ),
        (
            &jpeg_id,
            "width=20&height=20&method=crop",
            "image/jpeg",
            (32, 32),
        ),
    ] {
        // Twice: made, then served from the cache.
        for _ in 0..2 {
            let resp = download(&s, Some(&alice.token), &thumb(id, query)).await;
            assert_eq!(resp.status(), StatusCode::OK, "{query}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], ty, "{query}");
            assert_eq!(dimensions(&resp.bytes().await.unwrap()), dims, "{query}");
        }
    }
    let legacy = download(
        &s,
        None,
        &format!("/_matrix/media/v3/thumbnail/localhost/{png_id}?width=32&height=32&method=crop"),
    )
    .await;
    assert_eq!(legacy.status(), StatusCode::OK);

    // Bad parameters and content that is not an image.
    for q in [
        "width=0&height=10",
        "height=10",
        "width=10&height=10&method=stretch",
    ] {
        let resp = download(&s, Some(&alice.token), &thumb(&png_id, q)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    let text = upload_ok(&s, &alice, "text/plain", b"not an image".to_vec()).await;
    let resp = download(&s, Some(&alice.token), &thumb(&text, "width=32&height=32")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

/// A PNG whose header claims `width`×`height` pixels, with almost no pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc32(&ihdr).to_be_bytes());
    // A little compressed data, far from what the header promises.
    let idat = [
        b"IDAT".as_slice(),
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ]
    .concat();
    out.extend(9u32.to_be_bytes());
    out.extend(&idat);
    out.extend(crc32(&idat).to_be_bytes());
    out.extend(0u32.to_be_bytes());
    out.extend(b"IEND");
    out.extend(crc32(b"IEND").to_be_bytes());
    out
}

#[tokio::test]
async fn a_decompression_bomb_gets_a_clean_error() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let id = upload_ok(&s, &alice, "image/png", png_header_only(50_000, 50_000)).await;
    let resp = download(
        &s,
        Some(&alice.token),
        &format!(
            "/_matrix/client/v1/media/thumbnail/localhost/{id}?width=96&height=96&method=crop"
        ),
    )
    .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["errcode"], "M_TOO_LARGE");
    // The server is fine afterwards.
    let (status, _) = s
        .get("/_matrix/client/v1/media/config", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// A lazily generated body of `chunks` × 1 MiB, optionally failing midway.
fn generated_body(chunks: usize, fail_after: Option<usize>) -> reqwest::Body {
    let stream = futures_util::stream::iter(0..chunks).map(move |i| {
        if fail_after.is_some_and(|n| i >= n) {
            Err(std::io::Error::other("client gave up"))
        } else {
            Ok(Bytes::from(vec![(i % 251) as u8; 1024 * 1024]))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

use futures_util::StreamExt;

#[tokio::test]
async fn oversized_uploads_get_413_without_buffering_the_body() {
    let s = TestServer::start_with(|c| c.media.max_upload_size = 1024 * 1024).await;
    let alice = s.register("alice").await;
    // Declared too large: refused before reading.
    let resp = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.base))
        .bearer_auth(&alice.token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errcode"],
        "M_TOO_LARGE"
    );

    // Undeclared (chunked) and far larger than the limit: refused at the limit.
    let before = rss_kib();
    let (status, body) = upload(
        &s,
        &alice,
        "application/octet-stream",
        generated_body(256, None),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["errcode"], "M_TOO_LARGE");
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "a 256 MiB body grew the process by {grown_mib} MiB"
    );
    assert!(files_under(&media_dir(&s)).is_empty(), "nothing is kept");
}

#[tokio::test]
async fn an_upload_aborted_midway_leaves_no_file() {
    let s = TestServer::start_with(|c| c.media.max_upload_size = 2 * 1024 * 1024 * 1024).await;
    let alice = s.register("alice").await;
    let result = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.base))
        .bearer_auth(&alice.token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, 1024u64 * 1024 * 1024)
        .body(generated_body(1024, Some(8)))
        .send()
        .await;
    assert!(result.is_err() || !result.unwrap().status().is_success());
    for _ in 0..100 {
        if files_under(&media_dir(&s)).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("files left behind: {:?}", files_under(&media_dir(&s)));
}

#[tokio::test]
async fn range_requests_return_the_right_bytes() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let id = upload_ok(&s, &alice, "video/mp4", bytes.clone()).await;
    let path = format!("{}/_matrix/client/v1/media/download/localhost/{id}", s.base);
    let ranged = |range: &'static str| {
        s.http
            .get(&path)
            .bearer_auth(&alice.token)
            .header(header::RANGE, range)
            .send()
    };
    let resp = ranged("bytes=100-199").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 100-199/1000");
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "100");
    assert_eq!(resp.bytes().await.unwrap(), bytes[100..200]);
    let resp = ranged("bytes=-10").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap(), bytes[990..]);
    let resp = ranged("bytes=2000-").await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes */1000");
}

#[tokio::test]
async fn async_uploads_follow_the_spec() {
    let s = TestServer::start_with(|c| c.media.max_pending_uploads = 2).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (status, created) = s
        .post("/_matrix/media/v1/create", Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let uri = created["content_uri"].as_str().unwrap().to_owned();
    assert!(created["unused_expires_at"].as_u64().unwrap() > 1_700_000_000_000);
    let id = uri.rsplit('/').next().unwrap().to_owned();
    let download_path = format!("/_matrix/client/v1/media/download/localhost/{id}");

    let resp = download(
        &s,
        Some(&alice.token),
        &format!("{download_path}?timeout_ms=100"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errcode"],
        "M_NOT_YET_UPLOADED"
    );

    // A download waiting for the upload gets it when it lands.
    let wait_path = format!("{download_path}?timeout_ms=10000");
    let waiting = download(&s, Some(&alice.token), &wait_path);
    let put = |who: &Session, body: &'static [u8]| {
        s.http
            .put(format!(
                "{}/_matrix/media/v3/upload/localhost/{id}?filename=late.txt",
                s.base
            ))
            .bearer_auth(&who.token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .send()
    };
    let uploading = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let resp = put(&bob, b"not bob's").await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let resp = put(&alice, b"arrived late").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    };
    let (resp, ()) = tokio::join!(waiting, uploading);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), "arrived late");
    let resp = put(&alice, b"again").await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errcode"],
        "M_CANNOT_OVERWRITE_MEDIA"
    );

    // At most two pending ids.
    for _ in 0..2 {
        let (status, _) = s
            .post("/_matrix/media/v1/create", Some(&alice.token), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let got = s
        .post("/_matrix/media/v1/create", Some(&alice.token), json!({}))
        .await;
    assert_error(&got, 429, "M_LIMIT_EXCEEDED");
    assert!(got.1["retry_after_ms"].as_u64().is_some());
}

#[tokio::test]
async fn the_legacy_endpoints_can_be_frozen() {
    let s = TestServer::start_with(|c| c.media.legacy_unauthenticated = false).await;
    let alice = s.register("alice").await;
    let id = upload_ok(&s, &alice, "image/png", png(10, 10)).await;
    for path in [
        format!("/_matrix/media/v3/download/localhost/{id}"),
        format!("/_matrix/media/v3/thumbnail/localhost/{id}?width=32&height=32"),
    ] {
        let resp = download(&s, None, &path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let resp = download(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/localhost/{id}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn retention_deletes_the_oldest_media_over_the_budget() {
    let s = TestServer::start_with(|c| c.media.max_total_bytes = 2500).await;
    let alice = s.register("alice").await;
    let mut ids = Vec::new();
    for i in 0..3u8 {
        ids.push(upload_ok(&s, &alice, "application/octet-stream", vec![i; 1000]).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.services().media.sweep().unwrap(), 1);
    let status = |id: String| {
        let s = &s;
        let token = alice.token.clone();
        async move {
            download(
                s,
                Some(&token),
                &format!("/_matrix/client/v1/media/download/localhost/{id}"),
            )
            .await
            .status()
        }
    };
    assert_eq!(status(ids[0].clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(status(ids[1].clone()).await, StatusCode::OK);
    assert_eq!(status(ids[2].clone()).await, StatusCode::OK);
    assert_eq!(files_under(&media_dir(&s).join("content")).len(), 2);
}

/// A web page (with an OpenGraph image) and a redirect, on loopback.
async fn start_site() -> String {
    let image = png(60, 40);
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                axum::response::Html(
                    r#"<html><head><title>Fallback</title>
                    <meta property="og:title" content="BIG news">
                    <meta property="og:description" content="All about it">
                    <meta property="og:image" content="/image.png"></head></html>"#,
                )
            }),
        )
        .route(
            "/image.png",
            get(move || {
                let image = image.clone();
                async move { ([(header::CONTENT_TYPE, "image/png")], image) }
            }),
        )
        .route(
            "/away",
            get(|| async { Redirect::temporary("http://127.0.0.2:9/secret") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn url_previews_are_off_by_default_and_never_reach_private_addresses() {
    let site = start_site().await;
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let path = format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        urlencode(&format!("{site}/page"))
    );
    let got = s.get(&path, Some(&alice.token)).await;
    assert_error(&got, 403, "M_FORBIDDEN");

    let s = TestServer::start_with(|c| c.media.url_preview.enabled = true).await;
    let alice = s.register("alice").await;
    let got = s.get(&path, Some(&alice.token)).await;
    assert_error(&got, 403, "M_FORBIDDEN");
    let got = s
        .get(
            &format!(
                "/_matrix/client/v1/media/preview_url?url={}",
                urlencode("http://localhost:1/")
            ),
            Some(&alice.token),
        )
        .await;
    assert!(
        got.0.is_client_error() || got.0.is_server_error(),
        "{got:?}"
    );
}

#[tokio::test]
async fn url_previews_read_opengraph_and_store_the_image() {
    let site = start_site().await;
    let s = TestServer::start_with(|c| {
        c.media.url_preview.enabled = true;
        c.media.url_preview.ip_range_allowlist = vec!["127.0.0.1".into()];
    })
    .await;
    let alice = s.register("alice").await;
    let preview = |url: String| {
        let path = format!("/_matrix/media/v3/preview_url?url={}", urlencode(&url));
        let token = alice.token.clone();
        let s = &s;
        async move { s.get(&path, Some(&token)).await }
    };
    let (status, og) = preview(format!("{site}/page")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "BIG news");
    assert_eq!(og["og:description"], "All about it");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 60);
    let image = og["og:image"].as_str().unwrap();
    let id = image.strip_prefix("mxc://localhost/").expect("an mxc URI");
    let resp = download(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/localhost/{id}"),
    )
    .await;
    assert_eq!(dimensions(&resp.bytes().await.unwrap()), (60, 40));

    // A redirect to an address outside the allow-list is not followed.
    let (status, body) = preview(format!("{site}/away")).await;
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status} {body}"
    );
}
