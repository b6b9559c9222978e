//! The WebSocket scenarios (bigd's `ai.iambig/ws` transport, docs/extensions.md):
//! `ws-fanout` measures delivery latency over sockets next to the same run over
//! `/sync` long-poll; `ws-idle` holds many idle subscribed sockets and reports
//! the server's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{
    Message, Utf8Bytes, client::IntoClientRequest, protocol::WebSocketConfig,
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::client::{Client, ReqError, SyncResponse};
use super::scenarios::{
    Ctx, FANOUT_FILTER, Outcome, Received, Report, await_deliveries, collect_receivers,
    epoch_micros, per_second, polling_room, tagged_message,
};
use super::stats::{Errors, Latencies, Phase, round3};

pub const PATH: &str = "/_matrix/client/unstable/ai.iambig/ws";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes a socket reads at a time.
const READ_BUFFER: usize = 4 * 1024;

fn ws_error(what: &str, e: impl std::fmt::Display) -> ReqError {
    ReqError {
        key: "websocket".into(),
        detail: format!("{what}: {e}"),
        status: None,
        body: None,
    }
}

/// Opens a socket authenticated by the Authorization header.
async fn connect(client: &Client) -> Result<Socket, ReqError> {
    let url = format!("{}{PATH}", client.base.replacen("http://", "ws://", 1));
    let mut request = url
        .into_client_request()
        .map_err(|e| ws_error("building the upgrade request", e))?;
    let bearer = format!("Bearer {}", client.token)
        .parse()
        .map_err(|e| ws_error("building the upgrade request", e))?;
    request.headers_mut().insert("Authorization", bearer);
    // tungstenite zero-fills its whole read buffer before every read: at the
    // default 128 KiB that memset was a fifth of the tool's CPU, at 16 KiB
    // still half of each read. Frames here are a few KiB, and a larger one
    // is still read, in several reads (the server reads 4 KiB at a time too).
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(ws_error("opening the WebSocket", e)),
        Err(_) => Err(ws_error("opening the WebSocket", "timed out")),
    }
}

async fn send_frame(socket: &mut Socket, frame: Value) -> Result<(), ReqError> {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|e| ws_error("sending a frame", e))
}

/// The next JSON text frame (reading also answers the server's pings).
async fn next_json(socket: &mut Socket) -> Result<Value, ReqError> {
    let text = next_text(socket).await?;
    serde_json::from_str(text.as_str()).map_err(|e| ws_error("parsing a frame", e))
}

/// The next text frame, unparsed.
async fn next_text(socket: &mut Socket) -> Result<Utf8Bytes, ReqError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(close))) => {
                return Err(ws_error(
                    "the server closed the socket",
                    format!("{close:?}"),
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_error("reading the socket", e)),
            None => return Err(ws_error("reading the socket", "closed")),
        }
    }
}

/// Subscribes and returns the first (initial) sync frame's `next_batch`.
async fn subscribe(socket: &mut Socket, filter: &str) -> Result<String, ReqError> {
    let filter: Value = serde_json::from_str(filter).map_err(|e| ws_error("the filter", e))?;
    send_frame(
        socket,
        json!({ "id": "sync", "op": "sync", "filter": filter }),
    )
    .await?;
    loop {
        let frame = next_json(socket).await?;
        match frame["op"].as_str() {
            Some("sync") => {
                return Ok(frame["body"]["next_batch"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned());
            }
            Some("error") => return Err(ws_error("subscribing", frame["error"].clone())),
            _ => continue,
        }
    }
}

/// What a receiver reads of a server frame: sync frames' bodies, typed.
#[derive(serde::Deserialize)]
struct ServerFrame {
    op: Option<String>,
    body: Option<SyncResponse>,
}

/// How long a receiver waits after a frame before acknowledging it: a group
/// message reaches every member's socket at once, and an ack per frame would
/// be written (and read by the server) while the others are still being sent
/// theirs. A later frame within the wait replaces the pending ack.
const ACK_AFTER_QUIET: Duration = Duration::from_millis(2);

/// One receiver socket until `stop`: takes the run's messages and acks the
/// frames once they stop coming for `ACK_AFTER_QUIET`. A frame's time of
/// arrival is taken before it is parsed, as over `/sync`.
async fn receive(
    mut socket: Socket,
    room: String,
    run: String,
    total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut got = Received::default();
    let mut pending_ack: Option<String> = None;
    while !*stop.borrow() {
        let text = tokio::select! {
            biased;
            _ = stop.changed() => break,
            f = next_text(&mut socket) => f,
            () = tokio::time::sleep(ACK_AFTER_QUIET), if pending_ack.is_some() => {
                let ack = json!({ "op": "ack", "next_batch": pending_ack.take() });
                if let Err(e) = send_frame(&mut socket, ack).await {
                    got.errors.add(&e);
                    break;
                }
                continue;
            }
        };
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                got.errors.add(&e);
                break;
            }
        };
        let arrived = epoch_micros();
        let frame = match serde_json::from_str::<ServerFrame>(text.as_str()) {
            Ok(frame) if frame.op.as_deref() == Some("sync") => frame,
            Ok(_) => continue,
            Err(e) => {
                got.errors.add(&ws_error("parsing a frame", e));
                continue;
            }
        };
        got.requests += 1;
        match frame.body {
            Some(resp) => {
                total.fetch_add(got.take(&resp, &room, &run, arrived), Ordering::Relaxed);
                pending_ack = Some(resp.next_batch);
            }
            None => got.errors.add(&ws_error("parsing a sync frame", "no body")),
        }
    }
    let _ = socket.close(None).await;
    got
}

/// Sends one message as a request frame and waits for its response.
async fn send_message(
    socket: &mut Socket,
    id: &str,
    path: &str,
    content: &Value,
) -> Result<(), ReqError> {
    send_frame(
        socket,
        json!({ "id": id, "method": "PUT", "path": path, "body": content }),
    )
    .await?;
    loop {
        let frame = next_json(socket).await?;
        if frame["id"] != id {
            continue;
        }
        return match frame["status"].as_u64() {
            Some(200) => Ok(()),
            status => Err(ReqError {
                key: format!(
                    "{} {}",
                    status.unwrap_or(0),
                    frame["body"]["errcode"].as_str().unwrap_or("")
                ),
                detail: format!("sending over the socket: {frame}"),
                status: status.map(|s| s as u16),
                body: Some(frame["body"].clone()),
            }),
        };
    }
}

/// How one side of `ws-fanout` sends: over HTTP, or as request frames on a socket.
enum Via {
    Http(Client),
    Socket(Box<Socket>),
}

/// One transport's side of `ws-fanout`: a room, its receivers (running
/// until the end), its sender, and what its rounds measured.
struct Side {
    room: String,
    run: String,
    receivers: usize,
    total: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Received>>,
    via: Via,
    next_seq: u64,
    send_latency: Latencies,
    errors: Errors,
    /// Time spent sending, over all rounds.
    sending: Duration,
    server_cpu_seconds: Option<f64>,
    own_cpu_seconds: Option<f64>,
}

impl Side {
    /// The `/sync` side: receivers long-poll, the sender sends over HTTP.
    async fn polling(
        ctx: &Ctx,
        receivers: usize,
        stop: &watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let polled = polling_room(ctx, "poll", receivers, stop).await?;
        Ok(Self::new(
            polled.room,
            polled.run,
            receivers,
            polled.total,
            polled.tasks,
            Via::Http(polled.sender),
        ))
    }

    /// The socket side: receivers on subscribed sockets that ack every frame,
    /// the sender sending request frames on a socket of its own.
    async fn socketed(
        ctx: &Ctx,
        receivers: usize,
        stop: &watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let sender = ctx.register_users("wssender", 1).await?.remove(0);
        let clients = ctx.register_users("wsreceiver", receivers).await?;
        let room = ctx.public_room(&sender, "ws-fanout").await?;
        ctx.join_all(&clients, &room).await?;

        eprintln!("setup: {receivers} receiver socket(s) subscribe");
        let failed = |e: ReqError| format!("setup failed: {e}");
        let mut sockets = Vec::with_capacity(receivers);
        for client in &clients {
            let mut socket = connect(client).await.map_err(failed)?;
            subscribe(&mut socket, FANOUT_FILTER)
                .await
                .map_err(failed)?;
            sockets.push(socket);
        }
        let sender_socket = connect(&sender).await.map_err(failed)?;

        let run = format!("{}-ws", ctx.prefix);
        let total = Arc::new(AtomicU64::new(0));
        let tasks = sockets
            .into_iter()
            .map(|socket| {
                tokio::spawn(receive(
                    socket,
                    room.clone(),
                    run.clone(),
                    total.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Ok(Self::new(
            room,
            run,
            receivers,
            total,
            tasks,
            Via::Socket(Box::new(sender_socket)),
        ))
    }

    fn new(
        room: String,
        run: String,
        receivers: usize,
        total: Arc<AtomicU64>,
        tasks: Vec<tokio::task::JoinHandle<Received>>,
        via: Via,
    ) -> Self {
        Self {
            room,
            run,
            receivers,
            total,
            tasks,
            via,
            next_seq: 0,
            send_latency: Latencies::default(),
            errors: Errors::default(),
            sending: Duration::ZERO,
            server_cpu_seconds: Some(0.0),
            own_cpu_seconds: Some(0.0),
        }
    }

    /// Sends the next tagged message and waits for its response.
    async fn send_next(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let content = tagged_message(&self.run, seq);
        let t = Instant::now();
        let sent = match &mut self.via {
            Via::Http(client) => client
                .send(&self.room, &format!("fanout-{seq}"), &content)
                .await
                .map(drop),
            Via::Socket(socket) => {
                let room = &self.room;
                let path =
                    format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/ws-fanout-{seq}");
                send_message(socket, &seq.to_string(), &path, &content).await
            }
        };
        match sent {
            Ok(()) => self.send_latency.push(t.elapsed()),
            Err(e) => self.errors.add(&e),
        }
    }

    /// One round: `count` messages at `rate`, then a wait until every
    /// receiver has them (at most `grace`), so that rounds never overlap.
    async fn round(&mut self, ctx: &Ctx, count: u64, rate: f64, grace: u64) {
        let (phase, _) = Phase::begin(ctx.probe);
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for _ in 0..count {
            ticks.tick().await;
            self.send_next().await;
        }
        self.sending += phase.elapsed();
        let expected = self.send_latency.len() as u64 * self.receivers as u64;
        await_deliveries(&self.total, expected, grace).await;
        let done = phase.end(None);
        let add = |sum: Option<f64>, part: Option<f64>| Some(sum? + part?);
        self.server_cpu_seconds = add(self.server_cpu_seconds, done.cpu_seconds);
        self.own_cpu_seconds = add(self.own_cpu_seconds, done.own_cpu_seconds);
    }

    /// Collects the receivers (stopped by then) into the side's report.
    async fn report(self, ctx: &Ctx, params: &Value) -> Outcome {
        if let Via::Socket(mut socket) = self.via {
            let _ = (*socket).close(None).await;
        }
        let got = collect_receivers(self.tasks).await?;
        let mut errors = self.errors;
        errors.merge(got.errors);
        let sent = self.send_latency.len() as u64;
        let expected = sent * self.receivers as u64;
        let cpu = self.server_cpu_seconds.map(round3);
        let server = match ctx.probe {
            Some(probe) => json!({
                "pid": probe.pid,
                "cpu_seconds": cpu,
                "cpu_seconds_per_1000_messages": cpu.filter(|_| sent > 0).map(|c| round3(c * 1000.0 / sent as f64)),
            }),
            None => Value::Null,
        };
        Ok(Report {
            params: params.clone(),
            results: json!({
                "room_id": self.room,
                "messages_sent": sent,
                "send_rate_achieved": per_second(sent, self.sending),
                "send_latency_ms": self.send_latency.summary(),
                "expected": expected,
                "received": got.received,
                "missing": expected.saturating_sub(got.received),
                "duplicates": got.duplicates,
                "limited_timelines": got.limited,
                "requests_or_frames": got.requests,
                "delivery_latency_ms": got.latency.summary(),
            }),
            server,
            errors,
            bench_cpu_seconds: self.own_cpu_seconds.map(round3),
            failed_check: got.received < expected,
        })
    }
}

/// `ws-fanout`: the fanout scenario over `/sync` long-poll and over sockets,
/// each in its own room with its own users, in alternating rounds. Each
/// transport's messages are split into `rounds` rounds, run in pairs whose
/// order alternates (sync-ws, ws-sync, ...; `sockets_first` starts with the
/// socket), so that a machine growing busier or quieter during the run
/// weighs on both alike. A round ends when all its messages are delivered.
pub async fn ws_fanout(
    ctx: &Ctx,
    receivers: usize,
    rate: f64,
    seconds: u64,
    grace: u64,
    sockets_first: bool,
    rounds: u64,
) -> Outcome {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut polled = Side::polling(ctx, receivers, &stop_rx).await?;
    let mut socketed = Side::socketed(ctx, receivers, &stop_rx).await?;

    let to_send = (rate * seconds as f64).round().max(1.0) as u64;
    let rounds = rounds.clamp(1, to_send);
    eprintln!(
        "measuring: {to_send} messages at {rate}/s to {receivers} receiver(s) per transport, in {rounds} round(s) each"
    );
    for round in 0..rounds {
        // An even split, the remainder going to the first rounds.
        let count = to_send / rounds + u64::from(round < to_send % rounds);
        let sockets_now = sockets_first ^ (round % 2 == 1);
        let (first, second) = if sockets_now {
            (&mut socketed, &mut polled)
        } else {
            (&mut polled, &mut socketed)
        };
        first.round(ctx, count, rate, grace).await;
        second.round(ctx, count, rate, grace).await;
    }
    let _ = stop_tx.send(true);

    let params = json!({
        "receivers": receivers, "rate": rate, "seconds": seconds, "grace_seconds": grace,
        "rounds": rounds, "sockets_first": sockets_first,
    });
    let polled = polled.report(ctx, &params).await?;
    let socketed = socketed.report(ctx, &params).await?;
    let p50 = |r: &Report| r.results["delivery_latency_ms"]["p50"].as_f64();
    let ratio = match (p50(&polled), p50(&socketed)) {
        (Some(sync), Some(ws)) if ws > 0.0 => Some(round3(sync / ws)),
        _ => None,
    };
    let mut errors = polled.errors.clone();
    errors.merge(socketed.errors.clone());
    Ok(Report {
        params,
        results: json!({
            "p50_sync_over_ws": ratio,
            "sync": polled.results,
            "ws": socketed.results,
        }),
        server: json!({ "sync": polled.server, "ws": socketed.server }),
        errors,
        bench_cpu_seconds: match (polled.bench_cpu_seconds, socketed.bench_cpu_seconds) {
            (Some(a), Some(b)) => Some(round3(a + b)),
            _ => None,
        },
        failed_check: polled.failed_check || socketed.failed_check,
    })
}

/// `ws-idle`: `sockets` subscribed sockets spread over `users` users, held for
/// `hold` seconds; reports how many stayed open and the server's RSS.
pub async fn ws_idle(ctx: &Ctx, users: usize, sockets: usize, hold: u64) -> Outcome {
    raise_open_files_limit();
    let clients = ctx.register_users("idle", users).await?;
    ctx.require_sync(&clients[0]).await?;
    let (phase, rss) = Phase::begin(ctx.probe);
    eprintln!("setup: opening {sockets} subscribed socket(s)");
    let opened: Vec<Result<Socket, ReqError>> = stream::iter(0..sockets)
        .map(|i| {
            let client = &clients[i % clients.len()];
            async move {
                let mut socket = connect(client).await?;
                subscribe(&mut socket, FANOUT_FILTER).await?;
                Ok(socket)
            }
        })
        .buffer_unordered(ctx.concurrency)
        .collect()
        .await;
    let opening = phase.elapsed();
    let mut errors = Errors::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for socket in opened {
        match socket {
            Ok(socket) => tasks.push(tokio::spawn(hold_open(
                socket,
                open.clone(),
                stop_rx.clone(),
            ))),
            Err(e) => errors.add(&e),
        }
    }
    eprintln!("measuring: holding {} socket(s) for {hold} s", tasks.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let done = phase.end(rss);
    let still_open = open.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for task in tasks {
        if let Ok(Err(e)) = task.await {
            errors.add(&e);
        }
    }
    let rss_per_socket_kib = match (done.rss_start_mib, done.rss_mib) {
        (Some(a), Some(b)) if still_open > 0 => Some(round3((b - a) * 1024.0 / still_open as f64)),
        _ => None,
    };
    Ok(Report {
        params: json!({ "users": users, "sockets": sockets, "hold_seconds": hold }),
        results: json!({
            "opened_per_second": per_second(sockets as u64 - errors.total(), opening),
            "open_at_end": still_open,
            "server_rss_kib_per_socket": rss_per_socket_kib,
        }),
        server: done.server_json(ctx.probe.map(|p| p.pid), None),
        errors,
        bench_cpu_seconds: done.own_cpu_seconds,
        failed_check: still_open < sockets as u64,
    })
}

/// Keeps reading (which answers pings) until `stop`; counts itself open meanwhile.
async fn hold_open(
    mut socket: Socket,
    open: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ReqError> {
    open.fetch_add(1, Ordering::Relaxed);
    let result = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            frame = next_json(&mut socket) => if let Err(e) = frame { break Err(e) },
        }
    };
    open.fetch_sub(1, Ordering::Relaxed);
    let _ = socket.close(None).await;
    result
}

/// Thousands of sockets need as many file descriptors as the hard limit allows.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
