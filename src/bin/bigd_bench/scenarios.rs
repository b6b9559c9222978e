//! The scenarios. Each one sets up what it needs (users, rooms, messages; not
//! measured, any failure aborts the run), then runs one measured phase and returns
//! a [`Report`]. Failures inside the measured phase are counted, not fatal.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::client::{Client, ReqError, SyncResponse};
use super::stats::{Errors, Latencies, Phase, Probe, round3};

pub const PASSWORD: &str = "bigd-bench-password";

/// The `/sync` filter of the fanout scenario (inline JSON in the query).
pub const FANOUT_FILTER: &str = r#"{"room":{"timeline":{"limit":50}}}"#;

/// How a run reaches the server and names its users.
pub struct Ctx {
    pub anon: Client,
    pub registration_token: Option<String>,
    pub prefix: String,
    /// Parallel requests during setup (and the register scenario).
    pub concurrency: usize,
    pub probe: Option<Probe>,
}

pub struct Report {
    pub params: Value,
    pub results: Value,
    pub server: Value,
    pub errors: Errors,
    /// CPU seconds bigd-bench itself used in the measured phase.
    pub bench_cpu_seconds: Option<f64>,
    /// The measurement itself found a problem (e.g. a history walk that lost
    /// events), beyond counted request errors.
    pub failed_check: bool,
}

/// A scenario's outcome: a report, or why its setup failed.
pub type Outcome = Result<Report, String>;

fn setup(what: &str, e: ReqError) -> String {
    format!("setup failed while {what}: {e}")
}

pub fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn per_second(n: u64, wall: Duration) -> f64 {
    round3(n as f64 / wall.as_secs_f64().max(1e-9))
}

impl Ctx {
    pub fn username(&self, role: &str, i: usize) -> String {
        format!("{}-{role}{i}", self.prefix)
    }

    /// Registers `n` users named after `role`, `concurrency` at a time.
    pub async fn register_users(&self, role: &str, n: usize) -> Result<Vec<Client>, String> {
        eprintln!("setup: registering {n} {role} user(s)");
        let results: Vec<Result<Client, ReqError>> = stream::iter(0..n)
            .map(|i| {
                let name = self.username(role, i);
                async move {
                    self.anon
                        .register(&name, PASSWORD, self.registration_token.as_deref())
                        .await
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let clients: Vec<Client> = results
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| setup(&format!("registering {role} users"), e))?;
        if let Some(first) = clients.first() {
            eprintln!("setup: registered {} and others like it", first.user_id);
        }
        Ok(clients)
    }

    pub async fn public_room(&self, creator: &Client, name: &str) -> Result<String, String> {
        let body = json!({ "preset": "public_chat", "name": format!("bigd-bench {} {name}", self.prefix) });
        creator
            .create_room(&body)
            .await
            .map_err(|e| setup("creating the room", e))
    }

    pub async fn join_all(&self, clients: &[Client], room: &str) -> Result<(), String> {
        eprintln!("setup: {} user(s) join {room}", clients.len());
        let results: Vec<Result<String, ReqError>> = stream::iter(clients)
            .map(|c| c.join(room))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for r in results {
            r.map_err(|e| setup("joining the room", e))?;
        }
        Ok(())
    }

    /// Fails early, with a clear message, on a server without `/sync`.
    pub async fn require_sync(&self, client: &Client) -> Result<(), String> {
        match client.sync(None, 0, Some(FANOUT_FILTER)).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status, Some(404 | 405 | 501)) => Err(format!(
                "setup failed: the server does not implement /sync \
                 (GET /_matrix/client/v3/sync answered HTTP {}{}); this scenario needs it",
                e.status.unwrap_or(0),
                e.body
                    .as_ref()
                    .and_then(|b| b["errcode"].as_str())
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default(),
            )),
            Err(e) => Err(setup("probing GET /sync", e)),
        }
    }
}

/// Sends `count` messages from `client` sequentially; returns the event ids.
async fn fill(
    client: Client,
    room: String,
    tag: String,
    count: usize,
) -> Result<Vec<String>, ReqError> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let content = json!({ "msgtype": "m.text", "body": format!("fill {tag} {i}") });
        ids.push(
            client
                .send(&room, &format!("fill-{tag}-{i}"), &content)
                .await?,
        );
    }
    Ok(ids)
}

/// Sends `total` messages into `room` spread over `senders`, all at once.
async fn fill_room(senders: &[Client], room: &str, total: usize) -> Result<Vec<String>, String> {
    let started = Instant::now();
    eprintln!(
        "setup: filling {room} with {total} messages from {} senders",
        senders.len()
    );
    let n = senders.len();
    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(s, c)| {
            let count = total / n + usize::from(s < total % n);
            tokio::spawn(fill(c.clone(), room.to_owned(), s.to_string(), count))
        })
        .collect();
    let mut ids = Vec::with_capacity(total);
    for task in tasks {
        let sent = task
            .await
            .map_err(|e| format!("setup failed: a sender task died: {e}"))?
            .map_err(|e| setup("filling the room", e))?;
        ids.extend(sent);
    }
    eprintln!("setup: filled in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ids)
}

/// Registers `users` accounts and measures each registration.
pub async fn register(ctx: &Ctx, users: usize) -> Outcome {
    eprintln!(
        "measuring: {users} registrations, {} at a time",
        ctx.concurrency
    );
    let (phase, rss) = Phase::begin(ctx.probe);
    let results: Vec<(Duration, Result<Client, ReqError>)> = stream::iter(0..users)
        .map(|i| {
            let name = ctx.username("reg", i);
            async move {
                let t = Instant::now();
                let r = ctx
                    .anon
                    .register(&name, PASSWORD, ctx.registration_token.as_deref())
                    .await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(ctx.concurrency)
        .collect()
        .await;
    let done = phase.end(rss);
    let mut latency = Latencies::default();
    let mut errors = Errors::default();
    for (d, r) in results {
        match r {
            Ok(_) => latency.push(d),
            Err(e) => errors.add(&e),
        }
    }
    let ok = latency.len() as u64;
    Ok(Report {
        params: json!({ "users": users, "concurrency": ctx.concurrency }),
        results: json!({
            "registered": ok,
            "wall_seconds": round3(done.wall.as_secs_f64()),
            "registrations_per_second": per_second(ok, done.wall),
            "latency_ms": latency.summary(),
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), Some(("registrations", ok))),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: false,
    })
}

/// `senders` users send `messages` each into one room, all senders at once.
pub async fn send(ctx: &Ctx, senders: usize, messages: usize) -> Outcome {
    let owner = ctx.register_users("owner", 1).await?.remove(0);
    let clients = ctx.register_users("sender", senders).await?;
    let room = ctx.public_room(&owner, "send").await?;
    ctx.join_all(&clients, &room).await?;

    eprintln!("measuring: {senders} senders x {messages} messages");
    let (phase, rss) = Phase::begin(ctx.probe);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(s, client)| {
            let room = room.clone();
            tokio::spawn(async move {
                let mut latency = Latencies::default();
                let mut errors = Errors::default();
                for i in 0..messages {
                    let content = json!({ "msgtype": "m.text", "body": format!("bench message {i} from sender {s}") });
                    let t = Instant::now();
                    match client.send(&room, &format!("send-{i}"), &content).await {
                        Ok(_) => latency.push(t.elapsed()),
                        Err(e) => errors.add(&e),
                    }
                }
                (latency, errors)
            })
        })
        .collect();
    let mut latency = Latencies::default();
    let mut errors = Errors::default();
    for task in tasks {
        let (l, e) = task.await.map_err(|e| format!("a sender task died: {e}"))?;
        latency.extend(l);
        errors.merge(e);
    }
    let done = phase.end(rss);
    let ok = latency.len() as u64;
    Ok(Report {
        params: json!({ "senders": senders, "messages_per_sender": messages }),
        results: json!({
            "room_id": room,
            "messages_expected": senders * messages,
            "messages_sent": ok,
            "wall_seconds": round3(done.wall.as_secs_f64()),
            "messages_per_second": per_second(ok, done.wall),
            "latency_ms": latency.summary(),
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), Some(("messages", ok))),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: false,
    })
}

/// One backward walk through a room's whole timeline.
#[derive(Default)]
struct Walk {
    pages: u64,
    events: u64,
    messages: u64,
    duplicates: u64,
    seen: HashSet<String>,
    aborted: Option<String>,
}

/// Pages backward through `room` from the newest event until `end` is absent.
async fn walk_back(
    client: &Client,
    room: &str,
    page: u32,
    max_pages: u64,
    latency: &mut Latencies,
    errors: &mut Errors,
) -> Walk {
    let mut walk = Walk::default();
    let mut from: Option<String> = None;
    let mut failures_in_a_row = 0;
    loop {
        if walk.pages >= max_pages {
            walk.aborted = Some(format!("the walk did not end after {max_pages} pages"));
            return walk;
        }
        let t = Instant::now();
        let resp = client.messages(room, "b", from.as_deref(), page).await;
        let elapsed = t.elapsed();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                errors.add(&e);
                failures_in_a_row += 1;
                if failures_in_a_row >= 3 {
                    walk.aborted = Some(format!("three failed requests for one page: {e}"));
                    return walk;
                }
                continue;
            }
        };
        failures_in_a_row = 0;
        latency.push(elapsed);
        walk.pages += 1;
        walk.events += resp.chunk.len() as u64;
        for ev in &resp.chunk {
            walk.messages += u64::from(ev.kind == "m.room.message");
            if !walk.seen.insert(ev.event_id.clone()) {
                walk.duplicates += 1;
            }
        }
        match resp.end {
            None => return walk,
            // Some servers end with an empty page that repeats the token.
            Some(end) if resp.chunk.is_empty() && from.as_deref() == Some(end.as_str()) => {
                return walk;
            }
            Some(end) => from = Some(end),
        }
    }
}

/// Fills a room with `events` messages, then walks it backward `rounds` times.
/// Fills a room with `events` messages, then walks it backward `rounds` times.
/// With `reuse_room`, walks that room (filled by an earlier run with the same
/// prefix, e.g. before a server restart) as its owner instead of filling a new one.
pub async fn history(
    ctx: &Ctx,
    events: usize,
    page: u32,
    rounds: usize,
    reuse_room: Option<&str>,
) -> Outcome {
    const FILL_SENDERS: usize = 8;
    let (owner, room, sent) = match reuse_room {
        Some(room) => {
            let name = ctx.username("owner", 0);
            eprintln!("setup: logging in as {name} to walk {room}");
            let owner = ctx
                .anon
                .login(&name, PASSWORD)
                .await
                .map_err(|e| setup("logging in as the room's owner (same --prefix?)", e))?;
            (owner, room.to_owned(), None)
        }
        None => {
            let owner = ctx.register_users("owner", 1).await?.remove(0);
            let senders = ctx.register_users("filler", FILL_SENDERS).await?;
            let room = ctx.public_room(&owner, "history").await?;
            ctx.join_all(&senders, &room).await?;
            let sent: HashSet<String> = fill_room(&senders, &room, events)
                .await?
                .into_iter()
                .collect();
            (owner, room, Some(sent))
        }
    };

    // Every event once plus the room's state events, with a wide margin.
    let max_pages = (events as u64 + 1000) / u64::from(page) * 2 + 100;
    eprintln!("measuring: {rounds} backward walk(s), {page} events per page");
    let mut latency = Latencies::default();
    let mut errors = Errors::default();
    let mut per_round = Vec::new();
    let (mut pages, mut returned) = (0u64, 0u64);
    let mut complete = true;
    let (phase, rss) = Phase::begin(ctx.probe);
    for round in 0..rounds {
        let t = Instant::now();
        let walk = walk_back(&owner, &room, page, max_pages, &mut latency, &mut errors).await;
        // A reused room: its message count is all that is known.
        let missing = match &sent {
            Some(sent) => sent.iter().filter(|id| !walk.seen.contains(*id)).count(),
            None => events.saturating_sub(walk.messages as usize),
        };
        let ok = walk.aborted.is_none() && walk.duplicates == 0 && missing == 0;
        complete &= ok;
        pages += walk.pages;
        returned += walk.events;
        eprintln!(
            "round {round}: {} pages, {} events in {:.2} s{}",
            walk.pages,
            walk.events,
            t.elapsed().as_secs_f64(),
            if ok { "" } else { " (INCOMPLETE)" }
        );
        per_round.push(json!({
            "pages": walk.pages,
            "events": walk.events,
            "message_events": walk.messages,
            "distinct_events": walk.seen.len(),
            "duplicates": walk.duplicates,
            "missing_messages": missing,
            "aborted": walk.aborted,
            "seconds": round3(t.elapsed().as_secs_f64()),
            "complete": ok,
        }));
    }
    let done = phase.end(rss);
    Ok(Report {
        params: json!({ "events": events, "page": page, "rounds": rounds, "fill_senders": FILL_SENDERS, "reuse_room": reuse_room }),
        results: json!({
            "room_id": room,
            "pages": pages,
            "events_returned": returned,
            "wall_seconds": round3(done.wall.as_secs_f64()),
            "pages_per_second": per_second(pages, done.wall),
            "events_per_second": per_second(returned, done.wall),
            "page_latency_ms": latency.summary(),
            "complete": complete,
            "rounds": per_round,
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), Some(("pages", pages))),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: !complete,
    })
}

/// What one fanout receiver saw.
#[derive(Default)]
pub struct Received {
    pub latency: Latencies,
    pub seen: HashSet<u64>,
    pub duplicates: u64,
    pub limited: u64,
    pub requests: u64,
    pub errors: Errors,
}

impl Received {
    /// Takes the run's messages out of one sync response, timed at `now_us`.
    pub fn take(&mut self, resp: &SyncResponse, room: &str, run: &str, now_us: u64) -> u64 {
        let Some(joined) = resp.rooms.join.get(room) else {
            return 0;
        };
        if joined.timeline.limited {
            self.limited += 1;
        }
        let mut new = 0;
        for ev in &joined.timeline.events {
            let bench = &ev.content["ai.iambig.bench"];
            if ev.kind != "m.room.message" || bench["run"].as_str() != Some(run) {
                continue;
            }
            let (Some(seq), Some(sent_us)) = (bench["seq"].as_u64(), bench["sent_us"].as_u64())
            else {
                continue;
            };
            if self.seen.insert(seq) {
                new += 1;
                self.latency
                    .push_ms(now_us.saturating_sub(sent_us) as f64 / 1000.0);
            } else {
                self.duplicates += 1;
            }
        }
        new
    }
}

/// The content of fanout message `seq` of `run`, stamped with its send time.
pub fn tagged_message(run: &str, seq: u64) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("fanout {run} {seq}"),
        "ai.iambig.bench": { "run": run, "seq": seq, "sent_us": epoch_micros() },
    })
}

/// Waits up to `grace` seconds for `expected` deliveries in all.
pub async fn await_deliveries(total: &AtomicU64, expected: u64, grace: u64) {
    let deadline = Instant::now() + Duration::from_secs(grace);
    while total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What all receivers of a fanout saw, summed.
#[derive(Default)]
pub struct Delivered {
    pub latency: Latencies,
    pub received: u64,
    pub duplicates: u64,
    pub limited: u64,
    pub requests: u64,
    pub errors: Errors,
}

pub async fn collect_receivers(
    tasks: Vec<tokio::task::JoinHandle<Received>>,
) -> Result<Delivered, String> {
    let mut all = Delivered::default();
    for task in tasks {
        let got = task
            .await
            .map_err(|e| format!("a receiver task died: {e}"))?;
        all.received += got.seen.len() as u64;
        all.duplicates += got.duplicates;
        all.limited += got.limited;
        all.requests += got.requests;
        all.latency.extend(got.latency);
        all.errors.merge(got.errors);
    }
    Ok(all)
}

/// A long-poll loop until `stop` turns true.
async fn receive(
    client: Client,
    room: String,
    run: String,
    mut since: String,
    total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut got = Received::default();
    while !*stop.borrow() {
        let resp = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = client.sync_timed(Some(&since), 30_000, Some(FANOUT_FILTER)) => r,
        };
        got.requests += 1;
        match resp {
            Ok((resp, _, arrived)) => {
                let new = got.take(&resp, &room, &run, arrived);
                total.fetch_add(new, Ordering::Relaxed);
                since = resp.next_batch;
            }
            Err(e) => {
                got.errors.add(&e);
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    got
}

/// The receiving side of a fanout over `/sync`: a room with a sender and
/// `receivers` members long-polling it until `stop`.
pub struct PollingRoom {
    pub sender: Client,
    pub room: String,
    /// Tags this run's messages, so that receivers count only those.
    pub run: String,
    pub total: Arc<AtomicU64>,
    pub tasks: Vec<tokio::task::JoinHandle<Received>>,
}

/// Registers the sender and receivers (`label` names them), makes them
/// members, and starts the receivers' long-poll loops after an initial sync.
pub async fn polling_room(
    ctx: &Ctx,
    label: &str,
    receivers: usize,
    stop: &watch::Receiver<bool>,
) -> Result<PollingRoom, String> {
    let sender = ctx
        .register_users(&format!("{label}sender"), 1)
        .await?
        .remove(0);
    ctx.require_sync(&sender).await?;
    let clients = ctx
        .register_users(&format!("{label}receiver"), receivers)
        .await?;
    let room = ctx.public_room(&sender, label).await?;
    ctx.join_all(&clients, &room).await?;

    eprintln!("setup: initial sync of {receivers} receiver(s)");
    // `buffered`, not `buffer_unordered`: each token must stay with its
    // receiver (servers may bind tokens to users).
    let initial: Vec<Result<(SyncResponse, usize), ReqError>> = stream::iter(&clients)
        .map(|c| c.sync(None, 0, Some(FANOUT_FILTER)))
        .buffered(ctx.concurrency)
        .collect()
        .await;
    let mut tokens = Vec::with_capacity(receivers);
    for r in initial {
        tokens.push(
            r.map_err(|e| setup("doing the initial sync", e))?
                .0
                .next_batch,
        );
    }

    let run = format!("{}-{label}", ctx.prefix);
    let total = Arc::new(AtomicU64::new(0));
    let tasks = clients
        .into_iter()
        .zip(tokens)
        .map(|(c, since)| {
            tokio::spawn(receive(
                c,
                room.clone(),
                run.clone(),
                since,
                total.clone(),
                stop.clone(),
            ))
        })
        .collect();
    Ok(PollingRoom {
        sender,
        room,
        run,
        total,
        tasks,
    })
}

/// One sender, `receivers` long-polling `/sync`; latency from send to receipt.
pub async fn fanout(ctx: &Ctx, receivers: usize, rate: f64, seconds: u64, grace: u64) -> Outcome {
    let (stop_tx, stop_rx) = watch::channel(false);
    let PollingRoom {
        sender,
        room,
        run,
        total,
        tasks,
    } = polling_room(ctx, "fanout", receivers, &stop_rx).await?;

    let to_send = (rate * seconds as f64).round().max(1.0) as u64;
    eprintln!("measuring: {to_send} messages at {rate}/s to {receivers} receiver(s)");
    let (phase, rss) = Phase::begin(ctx.probe);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut send_latency = Latencies::default();
    let mut errors = Errors::default();
    for seq in 0..to_send {
        ticks.tick().await;
        let content = tagged_message(&run, seq);
        let t = Instant::now();
        match sender.send(&room, &format!("fanout-{seq}"), &content).await {
            Ok(_) => send_latency.push(t.elapsed()),
            Err(e) => errors.add(&e),
        }
    }
    let sending = phase.elapsed();
    let expected = send_latency.len() as u64 * receivers as u64;
    await_deliveries(&total, expected, grace).await;
    let done = phase.end(rss);
    let _ = stop_tx.send(true);

    let got = collect_receivers(tasks).await?;
    errors.merge(got.errors);
    let (latency, received) = (got.latency, got.received);
    let (duplicates, limited, requests) = (got.duplicates, got.limited, got.requests);
    let sent = send_latency.len() as u64;
    Ok(Report {
        params: json!({ "receivers": receivers, "rate": rate, "seconds": seconds, "grace_seconds": grace }),
        results: json!({
            "room_id": room,
            "messages_sent": sent,
            "send_seconds": round3(sending.as_secs_f64()),
            "send_rate_achieved": per_second(sent, sending),
            "send_latency_ms": send_latency.summary(),
            "expected": expected,
            "received": received,
            "missing": expected.saturating_sub(received),
            "duplicates": duplicates,
            "limited_timelines": limited,
            "sync_requests": requests,
            "delivery_latency_ms": latency.summary(),
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), Some(("messages", sent))),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: received < expected,
    })
}

/// One user in `rooms` rooms of `messages` messages each; times `/sync` without `since`.
pub async fn initial_sync(
    ctx: &Ctx,
    rooms: usize,
    messages: usize,
    rounds: usize,
    filter: Option<&str>,
    incremental: bool,
) -> Outcome {
    let user = ctx.register_users("sync", 1).await?.remove(0);
    ctx.require_sync(&user).await?;
    eprintln!("setup: {rooms} room(s) with {messages} message(s) each");
    let created: Vec<Result<String, String>> = stream::iter(0..rooms)
        .map(|i| {
            let user = user.clone();
            async move {
                let room = ctx.public_room(&user, &format!("sync {i}")).await?;
                fill(user, room.clone(), format!("r{i}"), messages)
                    .await
                    .map_err(|e| setup("filling the rooms", e))?;
                Ok(room)
            }
        })
        .buffer_unordered(ctx.concurrency)
        .collect()
        .await;
    let room_ids: HashSet<String> = created.into_iter().collect::<Result<_, _>>()?;

    // Incremental mode: every timed sync starts from the same token, with
    // nothing new since (the cheapest sync there is; what idle clients do).
    let since = if incremental {
        let (resp, _) = user
            .sync(None, 0, filter)
            .await
            .map_err(|e| setup("doing the initial sync", e))?;
        Some(resp.next_batch)
    } else {
        None
    };
    let kind = if incremental {
        "incremental"
    } else {
        "initial"
    };
    eprintln!("measuring: {rounds} {kind} sync(s)");
    let mut latency = Latencies::default();
    let mut errors = Errors::default();
    let mut first_ms = None;
    let (mut bytes, mut rooms_seen_min, mut events_min) = (0u64, usize::MAX, usize::MAX);
    let (phase, rss) = Phase::begin(ctx.probe);
    for _ in 0..rounds {
        let t = Instant::now();
        match user.sync(since.as_deref(), 0, filter).await {
            Ok((resp, size)) => {
                let elapsed = t.elapsed();
                first_ms.get_or_insert(round3(elapsed.as_secs_f64() * 1000.0));
                latency.push(elapsed);
                bytes += size as u64;
                let ours = resp
                    .rooms
                    .join
                    .iter()
                    .filter(|(id, _)| room_ids.contains(*id));
                let (n, events) = ours.fold((0, 0), |(n, e), (_, r)| {
                    (n + 1, e + r.timeline.events.len())
                });
                rooms_seen_min = rooms_seen_min.min(n);
                events_min = events_min.min(events);
            }
            Err(e) => errors.add(&e),
        }
    }
    let done = phase.end(rss);
    let ok = latency.len();
    // An incremental sync with nothing new rightly shows no rooms.
    let all_rooms_seen = ok > 0 && (incremental || rooms_seen_min == rooms);
    Ok(Report {
        params: json!({ "rooms": rooms, "messages_per_room": messages, "rounds": rounds, "filter": filter, "incremental": incremental }),
        results: json!({
            "syncs": ok,
            "wall_seconds": round3(done.wall.as_secs_f64()),
            "first_sync_ms": first_ms,
            "latency_ms": latency.summary(),
            "mean_response_bytes": (ok > 0).then(|| bytes / ok as u64),
            "rooms_seen_min": (ok > 0).then_some(rooms_seen_min),
            "timeline_events_min": (ok > 0).then_some(events_min),
            "all_rooms_seen": all_rooms_seen,
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), Some(("syncs", ok as u64))),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: !all_rooms_seen,
    })
}
