//! The WebSocket transport (`/_matrix/client/unstable/ai.iambig/ws`): one socket
//! per device that carries ordinary Client-Server requests as frames and pushes
//! sync responses as they happen. It is a transport over the existing API:
//! requests go through the same router, handlers, auth and limits as HTTP.
//!
//! Frames are JSON text. Client to server:
//! - `{"op":"auth","access_token":"..."}` (first, when no Authorization header),
//! - `{"id":"1","method":"PUT","path":"/_matrix/client/v3/...","body":{...}}`,
//! - `{"id":"2","op":"sync","since":"...","filter":...}` (subscribe),
//! - `{"op":"ack","next_batch":"..."}` (acknowledge a sync frame).
//!
//! Server to client: `{"id":"1","status":200,"body":{...}}`,
//! `{"id":"2","op":"sync","body":{...}}`, `{"op":"error","error":"...","id":...}`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{Message, WebSocket},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::StreamExt;
use http::{HeaderMap, Request, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use self::outbox::{CLOSE_GRACE, CLOSE_POLICY, Outbox};
use super::AppState;
use crate::{
    Services,
    auth::Identity,
    error::Error,
    storage::{Key, USERIDDEVICEID_DEVICE},
    sync::{Live, SyncFilter},
};

mod outbox;

pub const PATH: &str = "/_matrix/client/unstable/ai.iambig/ws";

/// Close code for going away (the server stops, the socket ends).
const CLOSE_AWAY: u16 = 1001;
/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 4096;
/// How long an acknowledgement waits before it is applied. Frames due in
/// the meantime (a message fans out to every member's socket at once) go out
/// first, and a later ack replaces one still waiting.
const ACK_DELAY: Duration = Duration::from_millis(5);

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(upgrade))
}

/// Frames a client sends.
#[derive(Debug, Deserialize)]
struct ClientFrame {
    id: Option<Value>,
    op: Option<String>,
    method: Option<String>,
    path: Option<String>,
    /// A request's body, passed on as it came.
    body: Option<Box<serde_json::value::RawValue>>,
    access_token: Option<String>,
    since: Option<String>,
    filter: Option<Value>,
    next_batch: Option<String>,
}

async fn upgrade(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = super::ruma::client_ip_of(&headers, Some(peer), s.config.http.trust_forwarded_for);
    // A token in the header is checked before upgrading: a bad one is a 401.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let identity = match &token {
        Some(token) => match s.auth.sessions.authenticate(token, &ip) {
            Ok(identity) => Some(identity),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let limit = s.config.websocket.max_frame_bytes;
    // A small read buffer: the default (128 KiB) would be resident for every
    // idle socket, and client frames are small.
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| run(s, socket, Peer { addr: peer, ip }, token.zip(identity)))
}

/// The socket's life: authentication, then requests, subscriptions and pings.
async fn run(s: Arc<Services>, socket: WebSocket, peer: Peer, auth: Option<(String, Identity)>) {
    let (sink, mut stream) = socket.split();
    let config = s.config.websocket.clone();
    let (out, writer) = Outbox::start(sink, config.max_queued_frames);

    let (token, identity) = match auth {
        Some(auth) => auth,
        None => match first_frame_auth(&s, &mut stream, &peer, &out).await {
            Some(auth) => auth,
            None => {
                drop(out);
                finish(writer, stream).await;
                return;
            }
        },
    };
    let connection = Connection {
        s: s.clone(),
        token,
        identity,
        peer,
        out: out.clone(),
        requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        pending_ack: parking_lot::Mutex::new(None),
    };

    let mut ping = tokio::time::interval(Duration::from_millis(config.ping_interval_ms));
    ping.tick().await;
    let mut silent_ticks = 0u32;
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    let mut stopping = s.stopping.subscribe();
    let mut ack_due = None;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                silent_ticks = 0;
                match frame {
                    Message::Text(text) => connection.handle_text(text.as_str(), &mut subscription),
                    Message::Binary(_) => connection.send_error(None, "Frames are JSON text"),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
                if ack_due.is_none() && connection.pending_ack.lock().is_some() {
                    ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
                }
            }
            () = sleep_until_some(ack_due), if ack_due.is_some() => {
                ack_due = None;
                connection.apply_ack();
            }
            _ = ping.tick() => {
                silent_ticks += 1;
                if silent_ticks > 2 {
                    connection.close(CLOSE_POLICY, "No pong: the connection is considered dead");
                    break;
                }
                out.send_message(Message::Ping(Default::default()));
            }
            _ = stopping.wait_for(|stop| *stop) => {
                connection.close(CLOSE_AWAY, "The server is stopping");
                break;
            }
        }
        if out.is_closed() {
            break;
        }
    }
    // Whatever ended the loop, the socket ends: the writer stops after the close frame.
    if let Some(task) = subscription {
        task.abort();
    }
    // What the client acknowledged counts, however the socket ended.
    connection.apply_ack();
    drop(connection);
    if !out.is_killed() {
        out.close(CLOSE_AWAY, "Closing");
    }
    drop(out);
    finish(writer, stream).await;
}

/// Lets the writer deliver the close frame while incoming frames are read and
/// dropped: closing a TCP connection with unread input resets it, and the
/// reset would destroy the close frame (and its reason) on the client's side.
async fn finish(
    writer: tokio::task::JoinHandle<()>,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
) {
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), async {
        let _ = tokio::join!(writer, drain);
    })
    .await;
}

/// Waits for `{"op":"auth","access_token":...}`; anything else closes the socket.
async fn first_frame_auth(
    s: &Services,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    peer: &Peer,
    out: &Outbox,
) -> Option<(String, Identity)> {
    let timeout = Duration::from_millis(s.config.websocket.auth_timeout_ms);
    let close = |reason: &str| out.close(CLOSE_POLICY, reason);
    let frame = match tokio::time::timeout(timeout, stream.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return None,
        Ok(Some(Ok(_))) => {
            close("The first frame must be a JSON text {\"op\":\"auth\",...} frame");
            return None;
        }
        Err(_) => {
            close("No auth frame in time");
            return None;
        }
    };
    let parsed: Option<ClientFrame> = serde_json::from_str(frame.as_str()).ok();
    let Some(token) = parsed
        .filter(|f| f.op.as_deref() == Some("auth"))
        .and_then(|f| f.access_token)
    else {
        close("The first frame must be {\"op\":\"auth\",\"access_token\":...}");
        return None;
    };
    match s.auth.sessions.authenticate(&token, &peer.ip) {
        Ok(identity) => Some((token, identity)),
        Err(e) => {
            close(&format!("M_UNKNOWN_TOKEN: {e}"));
            None
        }
    }
}

/// Where a socket comes from: its TCP peer and the client address (the
/// forwarded one, behind a trusted proxy).
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    ip: String,
}

struct Connection {
    s: Arc<Services>,
    token: String,
    identity: Identity,
    peer: Peer,
    out: Outbox,
    requests: Arc<Semaphore>,
    /// The highest acknowledged position not applied yet (see `ACK_DELAY`).
    pending_ack: parking_lot::Mutex<Option<u64>>,
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    fn handle_text(&self, text: &str, subscription: &mut Option<tokio::task::JoinHandle<()>>) {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => return self.send_error(None, &format!("Malformed frame: {e}")),
        };
        match frame.op.as_deref() {
            None if frame.method.is_some() => self.request(frame),
            None => self.send_error(
                frame.id,
                "A frame needs an \"op\" or a \"method\" and \"path\"",
            ),
            Some("sync") => {
                if let Some(task) = subscription.take() {
                    task.abort();
                }
                *subscription = self.subscribe(frame);
            }
            Some("ack") => self.ack(frame),
            Some("auth") => self.send_error(frame.id, "Already authenticated"),
            Some(other) => self.send_error(frame.id, &format!("Unknown op \"{other}\"")),
        }
    }

    fn send(&self, frame: Value) {
        self.out.send(frame);
    }

    fn send_error(&self, id: Option<Value>, error: &str) {
        self.send(json!({ "op": "error", "id": id, "error": error }));
    }

    fn close(&self, code: u16, reason: &str) {
        self.out.close(code, reason);
    }

    /// Dispatches a request frame to the router, as an HTTP request would be.
    fn request(&self, frame: ClientFrame) {
        let Some(router) = self.s.dispatcher.lock().clone() else {
            return self.send_error(frame.id, "The server is stopping");
        };
        let (Some(method), Some(path)) = (frame.method, frame.path) else {
            return self.send_error(frame.id, "A request needs \"method\" and \"path\"");
        };
        if !path.starts_with("/_matrix/client/") || path.starts_with(PATH) {
            return self.send_error(frame.id, "Only Client-Server API paths can be requested");
        }
        let Ok(permit) = self.requests.clone().try_acquire_owned() else {
            let error = Error::limit_exceeded(Duration::from_millis(100)).into_response();
            let id = frame.id;
            let out = self.out.clone();
            tokio::spawn(async move { respond(&out, id, error).await });
            return;
        };
        let body = frame
            .body
            .map(|b| String::from(Box::<str>::from(b)))
            .unwrap_or_default();
        let request = Request::builder()
            .method(method.as_str())
            .uri(path.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", self.peer.ip.as_str())
            .extension(ConnectInfo(self.peer.addr))
            .body(Body::from(body));
        let id = frame.id;
        let out = self.out.clone();
        match request {
            Ok(request) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    match router.oneshot(request).await {
                        Ok(response) => respond(&out, id, response).await,
                        Err(infallible) => match infallible {},
                    }
                });
            }
            Err(e) => self.send_error(id, &format!("Invalid request: {e}")),
        }
    }

    /// Starts pushing sync responses; the first comes at once.
    fn subscribe(&self, frame: ClientFrame) -> Option<tokio::task::JoinHandle<()>> {
        let filter = match frame.filter {
            None => SyncFilter::default(),
            Some(Value::String(id)) => match self.stored_filter(&id) {
                Some(filter) => filter,
                None => {
                    self.send_error(frame.id, &format!("No filter with id '{id}'"));
                    return None;
                }
            },
            Some(definition) => match serde_json::from_value(definition) {
                Ok(definition) => SyncFilter::from_definition(&definition),
                Err(e) => {
                    self.send_error(frame.id, &format!("Invalid filter: {e}"));
                    return None;
                }
            },
        };
        let mut live = match Live::new(
            self.s.clone(),
            self.identity.clone(),
            frame.since.as_deref(),
            filter,
        ) {
            Ok(live) => live,
            Err(e) => {
                self.send_error(frame.id, &e.to_string());
                return None;
            }
        };
        let (s, identity, token, peer, out, id) = (
            self.s.clone(),
            self.identity.clone(),
            self.token.clone(),
            self.peer.clone(),
            self.out.clone(),
            frame.id,
        );
        let frame_start = envelope_start(&id, "\"op\":\"sync\",\"body\"");
        Some(tokio::spawn(async move {
            let mut stopping = s.stopping.subscribe();
            // Presence hears of the subscription, and the token is checked
            // again (it may expire), at least this often.
            let keepalive = crate::sync::presence_keepalive(&s);
            let mut next_keepalive = tokio::time::Instant::now();
            // A logout deletes the device record: the socket ends at once.
            let mut device_changed = watch_device(&s, &identity);
            loop {
                tokio::select! {
                    () = live.wait() => {}
                    () = tokio::time::sleep_until(next_keepalive) => {
                        next_keepalive += keepalive;
                        if let Err(e) = s.presence.synced(&identity.user_id, "online") {
                            tracing::warn!(error = %e, "cannot record presence");
                        }
                        if signed_out(&s, &identity, &token, &peer.ip, &out) {
                            return;
                        }
                        continue;
                    }
                    _ = device_changed.changed() => {
                        device_changed = watch_device(&s, &identity);
                        if signed_out(&s, &identity, &token, &peer.ip, &out) {
                            return;
                        }
                        continue;
                    }
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
                match live.next_frame() {
                    Ok(Some(response)) => match sync_frame(&frame_start, &response) {
                        Ok(frame) => out.send_text(frame),
                        Err(e) => tracing::error!(error = %e, "cannot serialise a sync frame"),
                    },
                    Ok(None) => {}
                    Err(e) => {
                        out.send(json!({ "op": "error", "id": id, "error": e.to_string() }));
                        return;
                    }
                }
                if out.is_closed() || *s.stopping.borrow() {
                    return;
                }
            }
        }))
    }

    fn stored_filter(&self, id: &str) -> Option<SyncFilter> {
        let json = self
            .s
            .users
            .filter(&self.identity.user_id, id.parse().ok()?)
            .ok()??;
        let definition = serde_json::from_slice(&json).ok()?;
        Some(SyncFilter::from_definition(&definition))
    }

    /// Checks an ack's token at once; its effects wait for `apply_ack`.
    fn ack(&self, frame: ClientFrame) {
        let Some(token) = frame.next_batch else {
            return self.send_error(frame.id, "An ack needs \"next_batch\"");
        };
        let position = match crate::sync::token::decode(&self.identity.user_id, &token) {
            Ok(position) => position,
            Err(e) => return self.send_error(frame.id, &e.to_string()),
        };
        let mut pending = self.pending_ack.lock();
        *pending = Some(pending.map_or(position, |p| p.max(position)));
    }

    /// Applies the waiting acknowledgement: to-device deletion and delivered
    /// receipts, as the next `since` does over HTTP.
    fn apply_ack(&self) {
        let Some(position) = self.pending_ack.lock().take() else {
            return;
        };
        if let Err(e) = crate::sync::acknowledge(&self.s, &self.identity, position) {
            self.send_error(None, &e.to_string());
        }
    }
}

async fn respond(out: &Outbox, id: Option<Value>, response: Response) {
    let status = response.status().as_u16();
    let body = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(bytes) if bytes.is_empty() => "{}".to_owned(),
        // A JSON body goes into the frame as it is, without being parsed into a tree.
        Ok(bytes) => match serde_json::from_slice::<&serde_json::value::RawValue>(&bytes) {
            Ok(raw) => raw.get().to_owned(),
            Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()).to_string(),
        },
        Err(e) => json!({ "errcode": "M_UNKNOWN", "error": e.to_string() }).to_string(),
    };
    out.send_text(envelope(
        &id,
        &format!("\"status\":{status},\"body\""),
        &body,
    ));
}

/// A sync frame: `start` (the envelope up to the body), the
/// response serialised right after it (its events are raw JSON, written as
/// they are), and the closing brace.
fn sync_frame(start: &str, response: &crate::sync::SyncResponse) -> serde_json::Result<String> {
    let mut frame = Vec::with_capacity(start.len() + 2048);
    frame.extend_from_slice(start.as_bytes());
    serde_json::to_writer(&mut frame, response)?;
    frame.push(b'}');
    String::from_utf8(frame).map_err(serde::ser::Error::custom)
}

/// `{"id":<id>,<fields>:<body>}` from already serialised JSON parts.
fn envelope(id: &Option<Value>, fields: &str, body: &str) -> String {
    format!("{}{body}}}", envelope_start(id, fields))
}

/// `{"id":<id>,<fields>:`, what comes before a frame's body.
fn envelope_start(id: &Option<Value>, fields: &str) -> String {
    let id = id
        .as_ref()
        .map_or_else(|| "null".to_owned(), Value::to_string);
    format!("{{\"id\":{id},{fields}:")
}

/// Wakes on any write to the socket's device record (a logout deletes it).
fn watch_device(s: &Services, identity: &Identity) -> crate::storage::Watch {
    let key = (identity.user_id.clone(), identity.device_id.clone()).encode();
    s.db.watch(USERIDDEVICEID_DEVICE, key)
}

/// Closes the socket, saying why, when its token or device is gone.
fn signed_out(s: &Services, identity: &Identity, token: &str, ip: &str, out: &Outbox) -> bool {
    match still_signed_in(s, identity, token, ip) {
        Ok(()) => false,
        Err(e) => {
            out.close(CLOSE_POLICY, &format!("M_UNKNOWN_TOKEN: {e}"));
            true
        }
    }
}

/// The socket's token still works and its device still exists (a logout
/// deletes the device before the in-memory session is dropped).
fn still_signed_in(s: &Services, identity: &Identity, token: &str, ip: &str) -> Result<(), Error> {
    s.auth.sessions.authenticate(token, ip)?;
    if s.users
        .device(&identity.user_id, &identity.device_id)?
        .is_none()
    {
        return Err(Error::unknown_token(
            false,
            "The device has been logged out",
        ));
    }
    Ok(())
}
