//! The push-fanout scenario: a group whose members all have a pusher pointing
//! at a push gateway this tool runs on loopback. One sender sends at a fixed
//! rate; the gateway counts the notifications and how long each took from the
//! send to its arrival.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::scenarios::{Ctx, Outcome, Report, epoch_micros, per_second, tagged_message};
use super::stats::{Errors, Latencies, Phase, round3};

/// What the gateway received.
#[derive(Default)]
struct Received {
    /// (pushkey, event id) of each notification, to spot duplicates.
    seen: HashSet<(String, String)>,
    duplicates: u64,
    latency: Latencies,
    /// When the last notification arrived.
    last: Option<Instant>,
    /// Notifications about other runs or without an event (badges).
    other: u64,
}

type Shared = Arc<Mutex<Received>>;

async fn notify(
    State((run, got)): State<(String, Shared)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let n = &body["notification"];
    let now = epoch_micros();
    let mut got = got.lock().unwrap_or_else(|e| e.into_inner());
    let tag = &n["content"]["ai.iambig.bench"];
    let (Some(event), Some(sent)) = (n["event_id"].as_str(), tag["sent_us"].as_u64()) else {
        got.other += 1;
        return Json(json!({ "rejected": [] }));
    };
    if tag["run"].as_str() != Some(run.as_str()) {
        got.other += 1;
        return Json(json!({ "rejected": [] }));
    }
    for device in n["devices"].as_array().into_iter().flatten() {
        let key = device["pushkey"].as_str().unwrap_or_default().to_owned();
        if got.seen.insert((key, event.to_owned())) {
            got.latency
                .push_ms(now.saturating_sub(sent) as f64 / 1000.0);
        } else {
            got.duplicates += 1;
        }
    }
    got.last = Some(Instant::now());
    Json(json!({ "rejected": [] }))
}

/// Starts the gateway; returns its notify URL.
async fn start_gateway(run: String, got: Shared) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("setup failed: cannot start the push gateway: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("setup failed: {e}"))?;
    let app = Router::new()
        .route("/_matrix/push/v1/notify", post(notify))
        .with_state((run, got));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("push gateway stopped: {e}");
        }
    });
    Ok(format!("http://{addr}/_matrix/push/v1/notify"))
}

pub async fn push_fanout(
    ctx: &Ctx,
    members: usize,
    rate: f64,
    seconds: u64,
    grace: u64,
    pushers: bool,
) -> Outcome {
    let run = ctx.prefix.clone();
    let got: Shared = Arc::default();
    let url = start_gateway(run.clone(), got.clone()).await?;
    let sender = ctx.register_users("sender", 1).await?.remove(0);
    let clients = ctx.register_users("member", members).await?;
    let room = ctx.public_room(&sender, "push").await?;
    ctx.join_all(&clients, &room).await?;
    if pushers {
        eprintln!("setup: {members} pusher(s) to {url}");
        let set: Vec<Result<(), String>> = stream::iter(&clients)
            .map(|c| {
                let url = url.clone();
                async move {
                    c.set_pusher(&url, &c.user_id)
                        .await
                        .map_err(|e| format!("setup failed while setting pushers: {e}"))
                }
            })
            .buffer_unordered(ctx.concurrency)
            .collect()
            .await;
        set.into_iter().collect::<Result<Vec<()>, _>>()?;
    }

    let to_send = (rate * seconds as f64).round().max(1.0) as u64;
    eprintln!("measuring: {to_send} messages at {rate}/s into a room of {members} member(s)");
    let (phase, rss) = Phase::begin(ctx.probe);
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut send_latency = Latencies::default();
    let mut errors = Errors::default();
    for seq in 0..to_send {
        ticks.tick().await;
        let content = tagged_message(&run, seq);
        let t = Instant::now();
        match sender.send(&room, &format!("push-{seq}"), &content).await {
            Ok(_) => send_latency.push(t.elapsed()),
            Err(e) => errors.add(&e),
        }
    }
    let sent = send_latency.len() as u64;
    let expected = if pushers { sent * members as u64 } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(grace);
    loop {
        let received = got.lock().map(|g| g.seen.len() as u64).unwrap_or(0);
        if received >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = phase.end(rss);

    let got = got.lock().unwrap_or_else(|e| e.into_inner());
    let received = got.seen.len() as u64;
    let delivering = got.last.map_or(Duration::ZERO, |last| last - started);
    Ok(Report {
        params: json!({
            "members": members, "rate": rate, "seconds": seconds,
            "grace_seconds": grace, "pushers": pushers,
        }),
        results: json!({
            "room_id": room,
            "messages_sent": sent,
            "send_latency_ms": send_latency.summary(),
            "notifications_expected": expected,
            "notifications_received": received,
            "missing": expected.saturating_sub(received),
            "duplicates": got.duplicates,
            "other_pushes": got.other,
            "delivery_seconds": round3(delivering.as_secs_f64()),
            "notifications_per_second": per_second(received, delivering),
            "push_latency_ms": got.latency.summary(),
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), Some(("messages", sent))),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: received < expected || got.duplicates > 0,
    })
}
