//! The media scenario: upload and download throughput of a large file, and
//! thumbnails per second (made, then served from the cache).

use std::io::Cursor;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::client::Client;
use super::scenarios::{Ctx, Outcome, Report, per_second};
use super::stats::{Errors, Latencies, Phase, round3};

/// A PNG of `width`×`height`, distinct for each (`run`, `n`).
fn image(run: u32, n: u32, width: u32, height: u32) -> Vec<u8> {
    let mut img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x.wrapping_add(n) % 256) as u8,
            (y.wrapping_mul(3) % 256) as u8,
            (run % 256) as u8,
        ])
    });
    // The first two pixels carry the whole of `run` and `n`.
    let [a, b, c, d] = run.to_be_bytes();
    img.put_pixel(0, 0, image::Rgb([a, b, c]));
    img.put_pixel(1, 0, image::Rgb([d, (n >> 8) as u8, n as u8]));
    let mut out = Cursor::new(Vec::new());
    // Encoding a generated image cannot fail.
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

async fn upload(c: &Client, content_type: &str, body: Vec<u8>) -> Result<String, String> {
    let resp = c
        .http
        .post(format!("{}/_matrix/media/v3/upload", c.base))
        .bearer_auth(&c.token)
        .header("content-type", content_type)
        .body(body)
        .timeout(c.timeout)
        .send()
        .await
        .map_err(|e| format!("upload: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("upload: {e}"))?;
    if !status.is_success() {
        return Err(format!("upload: HTTP {status} {body}"));
    }
    let uri = body["content_uri"].as_str().unwrap_or_default();
    uri.strip_prefix("mxc://")
        .map(str::to_owned)
        .ok_or_else(|| format!("upload: no content_uri in {body}"))
}

/// GETs a media path; returns the body length.
async fn fetch(c: &Client, path: &str) -> Result<usize, String> {
    let resp = c
        .http
        .get(format!("{}{path}", c.base))
        .bearer_auth(&c.token)
        .timeout(c.timeout)
        .send()
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("GET {path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {path}: HTTP {status}"));
    }
    Ok(bytes.len())
}

fn mb_per_second(bytes: u64, wall: Duration) -> f64 {
    round3(bytes as f64 / (1024.0 * 1024.0) / wall.as_secs_f64().max(1e-9))
}

pub async fn media(ctx: &Ctx, size_mb: usize, rounds: usize, thumbnails: usize) -> Outcome {
    let user = ctx.register_users("media", 1).await?.remove(0);
    let size = size_mb * 1024 * 1024;
    let mut errors = Errors::default();

    eprintln!("measuring: {rounds} upload(s) and download(s) of {size_mb} MiB");
    let (phase, rss) = Phase::begin(ctx.probe);
    let mut up = Latencies::default();
    let mut ids = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        // Distinct bytes each round, so no upload is deduplicated away.
        let mut body = vec![(round % 251) as u8; size];
        body[..8].copy_from_slice(&(round as u64).to_le_bytes());
        let t = Instant::now();
        match upload(&user, "application/octet-stream", body).await {
            Ok(id) => {
                up.push(t.elapsed());
                ids.push(id);
            }
            Err(e) => errors.add_message(&e),
        }
    }
    let upload_wall = started.elapsed();
    let mut down = Latencies::default();
    let started = Instant::now();
    let mut downloaded = 0u64;
    for id in &ids {
        let t = Instant::now();
        match fetch(&user, &format!("/_matrix/client/v1/media/download/{id}")).await {
            Ok(n) => {
                down.push(t.elapsed());
                downloaded += n as u64;
            }
            Err(e) => errors.add_message(&e),
        }
    }
    let download_wall = started.elapsed();

    eprintln!("measuring: thumbnails of {thumbnails} distinct 1024x768 PNGs");
    // Distinct from earlier runs' images too, or their cached thumbnails serve.
    let seed = ctx
        .prefix
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let sources: Vec<Result<String, String>> = stream::iter(0..thumbnails)
        .map(|i| {
            let user = &user;
            async move { upload(user, "image/png", image(seed, i as u32, 1024, 768)).await }
        })
        .buffer_unordered(ctx.concurrency.min(4))
        .collect()
        .await;
    let sources: Vec<String> = sources.into_iter().filter_map(Result::ok).collect();
    let mut timings = Vec::new();
    for pass in ["made", "cached"] {
        let started = Instant::now();
        let results: Vec<Result<usize, String>> = stream::iter(&sources)
            .map(|id| {
                let user = &user;
                async move {
                    let path = format!(
                        "/_matrix/client/v1/media/thumbnail/{id}?width=96&height=96&method=crop"
                    );
                    fetch(user, &path).await
                }
            })
            .buffer_unordered(ctx.concurrency.min(8))
            .collect()
            .await;
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        for e in results.into_iter().filter_map(Result::err) {
            errors.add_message(&e);
        }
        timings.push((pass, ok, started.elapsed()));
    }
    let done = phase.end(rss);

    let uploaded = ids.len() as u64 * size as u64;
    let thumbs: Value = timings
        .iter()
        .map(|(pass, ok, wall)| {
            (
                (*pass).to_owned(),
                json!({ "thumbnails": ok, "seconds": round3(wall.as_secs_f64()), "per_second": per_second(*ok, *wall) }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(Report {
        params: json!({ "size_mb": size_mb, "rounds": rounds, "thumbnails": thumbnails }),
        results: json!({
            "uploads": ids.len(),
            "upload_mb_per_second": mb_per_second(uploaded, upload_wall),
            "upload_latency_ms": up.summary(),
            "download_mb_per_second": mb_per_second(downloaded, download_wall),
            "download_latency_ms": down.summary(),
            "thumbnails": thumbs,
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), None),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: ids.len() < rounds || sources.len() < thumbnails,
    })
}
