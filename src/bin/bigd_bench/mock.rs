//! A tiny in-memory stand-in for a homeserver, just enough of the Client-Server
//! API for every scenario (including `/sync`, which bigd lacks so far), so the
//! scenarios' logic is tested without a real server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::client::Client;
use super::scenarios::{self, Ctx};
use super::stats::Probe;

#[derive(Default)]
struct Store {
    /// Every event: (room, event id, type, content). A sync token is an index.
    events: Vec<(String, String, String, Value)>,
    rooms: usize,
}

#[derive(Clone)]
struct Mock {
    store: Arc<Mutex<Store>>,
    count: watch::Sender<usize>,
}

impl Mock {
    fn push(&self, room: &str, kind: &str, content: Value) -> String {
        let mut store = self.store.lock().unwrap();
        let id = format!("$e{}", store.events.len());
        store
            .events
            .push((room.into(), id.clone(), kind.into(), content));
        let n = store.events.len();
        drop(store);
        self.count.send_replace(n);
        id
    }
}

/// Starts the mock on an ephemeral loopback port; returns its base URL.
async fn start(with_sync: bool) -> String {
    let (count, _) = watch::channel(0);
    let mock = Mock {
        store: Arc::default(),
        count,
    };
    let mut app = Router::new()
        .route("/_matrix/client/v3/register", post(register))
        .route("/_matrix/client/v3/login", post(login))
        .route("/_matrix/client/v3/createRoom", post(create_room))
        .route("/_matrix/client/v3/join/{room}", post(join))
        .route(
            "/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}",
            put(send),
        )
        .route("/_matrix/client/v3/rooms/{room}/messages", get(messages));
    if with_sync {
        app = app.route("/_matrix/client/v3/sync", get(sync));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.with_state(mock)).await });
    format!("http://{addr}")
}

/// Insists on a UIA session first, as a strict server may.
async fn register(Json(body): Json<Value>) -> Response {
    if body["auth"]["session"].as_str() != Some("uia1") {
        let flows =
            json!({ "session": "uia1", "flows": [{ "stages": ["m.login.dummy"] }], "params": {} });
        return (StatusCode::UNAUTHORIZED, Json(flows)).into_response();
    }
    let user = body["username"].as_str().unwrap_or("x");
    Json(json!({ "user_id": format!("@{user}:mock"), "access_token": format!("tok-{user}"), "device_id": "D" }))
        .into_response()
}

async fn login(Json(body): Json<Value>) -> Json<Value> {
    let user = body["identifier"]["user"].as_str().unwrap_or("x");
    Json(
        json!({ "user_id": format!("@{user}:mock"), "access_token": format!("tok-{user}"), "device_id": "D2" }),
    )
}

async fn create_room(State(m): State<Mock>) -> Json<Value> {
    let room = {
        let mut store = m.store.lock().unwrap();
        store.rooms += 1;
        format!("!r{}:mock", store.rooms)
    };
    m.push(&room, "m.room.create", json!({}));
    Json(json!({ "room_id": room }))
}

async fn join(Path(room): Path<String>) -> Json<Value> {
    Json(json!({ "room_id": room }))
}

async fn send(
    State(m): State<Mock>,
    Path((room, kind, _txn)): Path<(String, String, String)>,
    Json(content): Json<Value>,
) -> Json<Value> {
    Json(json!({ "event_id": m.push(&room, &kind, content) }))
}

async fn messages(
    State(m): State<Mock>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let store = m.store.lock().unwrap();
    let ours: Vec<_> = store.events.iter().filter(|e| e.0 == room).collect();
    let from: usize = q
        .get("from")
        .and_then(|f| f.parse().ok())
        .unwrap_or(ours.len());
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let start = from.saturating_sub(limit);
    let chunk: Vec<Value> = ours[start..from]
        .iter()
        .rev()
        .map(|e| json!({ "event_id": e.1, "type": e.2, "content": e.3 }))
        .collect();
    let mut resp = json!({ "chunk": chunk, "start": from.to_string() });
    if start > 0 {
        resp["end"] = json!(start.to_string());
    }
    Json(resp)
}

async fn sync(State(m): State<Mock>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let since: usize = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let timeout: u64 = q.get("timeout").and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut rx = m.count.subscribe();
    let _ = tokio::time::timeout(Duration::from_millis(timeout), rx.wait_for(|n| *n > since)).await;
    let store = m.store.lock().unwrap();
    let mut join: HashMap<String, Vec<Value>> = HashMap::new();
    for e in &store.events[since.min(store.events.len())..] {
        join.entry(e.0.clone())
            .or_default()
            .push(json!({ "event_id": e.1, "type": e.2, "content": e.3 }));
    }
    let join: serde_json::Map<String, Value> = join
        .into_iter()
        .map(|(room, mut events)| {
            let limited = events.len() > 50;
            let events = events.split_off(events.len().saturating_sub(50));
            (
                room,
                json!({ "timeline": { "events": events, "limited": limited } }),
            )
        })
        .collect();
    Json(json!({ "next_batch": store.events.len().to_string(), "rooms": { "join": join } }))
}

async fn ctx(with_sync: bool) -> Ctx {
    bigd::util::install_tls_provider();
    let base = start(with_sync).await;
    Ctx {
        anon: Client::anonymous(reqwest::Client::new(), &base, Duration::from_secs(10)),
        registration_token: None,
        prefix: "t".into(),
        concurrency: 4,
        probe: Some(Probe::new(std::process::id()).unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_scenario_counts_every_user() {
    let r = scenarios::register(&ctx(false).await, 5).await.unwrap();
    assert_eq!(r.results["registered"], 5);
    assert_eq!(r.errors.total(), 0);
    assert_eq!(r.results["latency_ms"]["count"], 5);
    assert!(r.server["cpu_seconds"].is_number(), "{}", r.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_scenario_sends_k_times_m() {
    let r = scenarios::send(&ctx(false).await, 3, 4).await.unwrap();
    assert_eq!(r.results["messages_sent"], 12);
    assert_eq!(r.errors.total(), 0);
    assert!(r.server["cpu_seconds_per_1000_messages"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_scenario_walks_the_whole_room() {
    let r = scenarios::history(&ctx(false).await, 230, 50, 2, None)
        .await
        .unwrap();
    assert_eq!(r.results["complete"], true, "{}", r.results);
    // 230 messages and the create event, in pages of 50: 5 pages per walk.
    assert_eq!(r.results["pages"], 10);
    assert_eq!(r.results["events_returned"], 2 * 231);
    assert!(!r.failed_check);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_scenario_walks_a_room_of_an_earlier_run() {
    let c = ctx(false).await;
    let first = scenarios::history(&c, 120, 50, 1, None).await.unwrap();
    let room = first.results["room_id"].as_str().unwrap().to_owned();
    let r = scenarios::history(&c, 120, 50, 2, Some(&room))
        .await
        .unwrap();
    assert_eq!(r.results["complete"], true, "{}", r.results);
    assert_eq!(r.results["pages"], 6);
    // Claiming more messages than the room holds fails the check.
    let r = scenarios::history(&c, 121, 50, 1, Some(&room))
        .await
        .unwrap();
    assert_eq!(r.results["complete"], false);
    assert!(r.failed_check);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_scenario_delivers_every_message_to_every_receiver() {
    let r = scenarios::fanout(&ctx(true).await, 3, 40.0, 1, 5)
        .await
        .unwrap();
    assert_eq!(r.results["messages_sent"], 40, "{}", r.results);
    assert_eq!(r.results["expected"], 120);
    assert_eq!(r.results["received"], 120, "{}", r.results);
    assert_eq!(r.results["duplicates"], 0);
    assert_eq!(r.results["delivery_latency_ms"]["count"], 120);
    assert_eq!(r.errors.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_scenarios_fail_cleanly_without_sync() {
    let c = ctx(false).await;
    let e = scenarios::fanout(&c, 2, 10.0, 1, 1).await.err().unwrap();
    assert!(e.contains("does not implement /sync"), "{e}");
    assert!(e.contains("404"), "{e}");
    let e = scenarios::initial_sync(&c, 2, 1, 2, None, false)
        .await
        .err()
        .unwrap();
    assert!(e.contains("does not implement /sync"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_scenario_sees_every_room() {
    let r = scenarios::initial_sync(&ctx(true).await, 3, 2, 4, None, false)
        .await
        .unwrap();
    assert_eq!(r.results["syncs"], 4);
    assert_eq!(r.results["all_rooms_seen"], true, "{}", r.results);
    // Each room: its create event and 2 messages.
    assert_eq!(r.results["timeline_events_min"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failure_is_an_error_not_a_panic() {
    bigd::util::install_tls_provider();
    // Nothing listens on this port (bound, then closed).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let c = Ctx {
        anon: Client::anonymous(reqwest::Client::new(), &base, Duration::from_secs(2)),
        registration_token: None,
        prefix: "t".into(),
        concurrency: 2,
        probe: None,
    };
    let e = scenarios::send(&c, 2, 2).await.err().unwrap();
    assert!(e.contains("setup failed"), "{e}");
}
