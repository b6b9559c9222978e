//! The WebSocket transport, driven by a real WebSocket client over loopback.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

use crate::common::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PATH: &str = "/_matrix/client/unstable/ai.iambig/ws";

fn ws_url(s: &TestServer) -> String {
    format!("{}{PATH}", s.base.replacen("http://", "ws://", 1))
}

/// Connects with the token in the Authorization header.
async fn connect(s: &TestServer, who: &Session) -> Socket {
    connect_async(authorized_upgrade(s, who))
        .await
        .expect("upgrade")
        .0
}

/// The upgrade request, with the token in the Authorization header.
fn authorized_upgrade(
    s: &TestServer,
    who: &Session,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = ws_url(s).into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", who.token).parse().unwrap(),
    );
    request
}

/// Connects and authenticates with the first frame, as a browser does.
async fn connect_by_frame(s: &TestServer, who: &Session) -> Socket {
    let (mut socket, _) = connect_async(ws_url(s)).await.expect("upgrade");
    send(
        &mut socket,
        json!({ "op": "auth", "access_token": who.token }),
    )
    .await;
    socket
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON frame (pings are answered by the client library itself).
async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame ok");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

/// Waits for the close frame and returns its code and reason.
async fn close_of(socket: &mut Socket) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (frame.code, frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) => panic!("closed without a reason"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("socket error before the close frame: {e}"),
            Err(_) => panic!("no close within 10 s"),
        }
    }
}

/// A request frame's response.
async fn call(socket: &mut Socket, id: &str, method: &str, path: &str, body: Value) -> Value {
    send(
        socket,
        json!({ "id": id, "method": method, "path": path, "body": body }),
    )
    .await;
    loop {
        let frame = next_frame(socket).await;
        if frame["id"] == id && frame.get("status").is_some() {
            return frame;
        }
    }
}

/// The next sync frame, skipping anything else.
async fn next_sync(socket: &mut Socket) -> Value {
    loop {
        let frame = next_frame(socket).await;
        if frame["op"] == "sync" {
            return frame["body"].clone();
        }
    }
}

fn timeline_bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn header_auth_then_http_message_arrives_as_sync_frame() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect(&s, &bob).await;
    send(&mut socket, json!({ "id": "s", "op": "sync" })).await;
    let initial = next_sync(&mut socket).await;
    assert!(
        initial["rooms"]["join"][&room].is_object(),
        "initial sync at once: {initial}"
    );
    s.send_ok(&alice, &room, "over http").await;
    let mut bodies = Vec::new();
    while !bodies.contains(&"over http".to_owned()) {
        bodies.extend(timeline_bodies(&next_sync(&mut socket).await, &room));
    }
}

#[tokio::test]
async fn first_frame_auth_works_and_bad_tokens_are_refused() {
    let (s, _alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect_by_frame(&s, &bob).await;
    let whoami = call(
        &mut socket,
        "1",
        "GET",
        "/_matrix/client/v3/account/whoami",
        Value::Null,
    )
    .await;
    assert_eq!(whoami["status"], 200);
    assert_eq!(whoami["body"]["user_id"], bob.user_id);

    // A bad token in the header refuses the upgrade with the spec's error.
    let mut request = ws_url(&s).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer nope".parse().unwrap());
    match connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
        }
        other => panic!("expected a 401, got {other:?}"),
    }

    // A bad token in the first frame closes the socket with a reason.
    let (mut socket, _) = connect_async(ws_url(&s)).await.unwrap();
    send(&mut socket, json!({ "op": "auth", "access_token": "nope" })).await;
    let (code, reason) = close_of(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("M_UNKNOWN_TOKEN"), "{reason}");

    // Nothing but auth is accepted first.
    let (mut socket, _) = connect_async(ws_url(&s)).await.unwrap();
    send(
        &mut socket,
        json!({ "id": "1", "method": "GET", "path": "/_matrix/client/v3/account/whoami" }),
    )
    .await;
    let (code, reason) = close_of(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("auth"), "{reason}");
}

#[tokio::test]
async fn requests_over_the_socket_match_http() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect(&s, &alice).await;
    let mut bob_socket = connect(&s, &bob).await;
    send(&mut bob_socket, json!({ "id": "s", "op": "sync" })).await;
    next_sync(&mut bob_socket).await;

    // Send: the event is stored and txn ids are idempotent, as over HTTP.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let body = json!({ "msgtype": "m.text", "body": "over ws" });
    let sent = call(&mut socket, "1", "PUT", &path, body.clone()).await;
    assert_eq!(sent["status"], 200, "{sent}");
    let event_id = sent["body"]["event_id"].as_str().unwrap().to_owned();
    let again = call(&mut socket, "2", "PUT", &path, body).await;
    assert_eq!(again["body"]["event_id"], event_id);
    let (status, event) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(event["content"]["body"], "over ws");

    // State: written over the socket, read over HTTP, and the same errors.
    let topic_path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic");
    let put = call(
        &mut socket,
        "3",
        "PUT",
        &topic_path,
        json!({ "topic": "ws" }),
    )
    .await;
    assert_eq!(put["status"], 200);
    let (_, topic) = s.get(&topic_path, Some(&bob.token)).await;
    assert_eq!(topic["topic"], "ws");
    let missing = call(
        &mut socket,
        "4",
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
        Value::Null,
    )
    .await;
    let http_missing = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(missing["status"], http_missing.0.as_u16());
    assert_eq!(missing["body"]["errcode"], http_missing.1["errcode"]);
    let elsewhere = "/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/t9";
    let refused = call(&mut socket, "5", "PUT", elsewhere, json!({})).await;
    let http_refused = s.put(elsewhere, Some(&alice.token), json!({})).await;
    assert!(http_refused.0.is_client_error());
    assert_eq!(refused["status"], http_refused.0.as_u16());
    assert_eq!(refused["body"], http_refused.1);

    // Typing and receipts reach the other member's socket.
    let typing = call(
        &mut socket,
        "6",
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id),
        json!({ "typing": true, "timeout": 10000 }),
    )
    .await;
    assert_eq!(typing["status"], 200);
    let receipt = call(
        &mut socket,
        "7",
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}"),
        json!({}),
    )
    .await;
    assert_eq!(receipt["status"], 200);
    let (mut saw_typing, mut saw_receipt) = (false, false);
    while !(saw_typing && saw_receipt) {
        let sync = next_sync(&mut bob_socket).await;
        for event in sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if event["type"] == "m.typing" && event["content"]["user_ids"] == json!([alice.user_id])
            {
                saw_typing = true;
            }
            if event["type"] == "m.receipt"
                && event["content"][&event_id]["m.read"][&alice.user_id].is_object()
            {
                saw_receipt = true;
            }
        }
    }
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_socket_stays_up() {
    let (s, _alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect(&s, &bob).await;
    for bad in [
        "not json",
        "{\"op\":\"dance\"}",
        "{\"id\":\"x\"}",
        "{\"op\":\"ack\"}",
    ] {
        socket.send(Message::Text(bad.into())).await.unwrap();
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["op"], "error", "{bad}: {frame}");
        assert!(frame["error"].as_str().unwrap().len() > 5);
    }
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut socket).await["op"], "error");
    send(
        &mut socket,
        json!({ "id": "1", "method": "GET", "path": "/_matrix/federation/v1/version" }),
    )
    .await;
    let refused = next_frame(&mut socket).await;
    assert_eq!(
        refused["op"], "error",
        "only Client-Server paths: {refused}"
    );
    assert_eq!(refused["id"], "1");
    let whoami = call(
        &mut socket,
        "2",
        "GET",
        "/_matrix/client/v3/account/whoami",
        Value::Null,
    )
    .await;
    assert_eq!(whoami["status"], 200);
}

#[tokio::test]
async fn reconnecting_with_the_last_ack_loses_and_repeats_nothing() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect(&s, &bob).await;
    send(&mut socket, json!({ "id": "s", "op": "sync" })).await;
    let mut acked = next_sync(&mut socket).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&mut socket, json!({ "op": "ack", "next_batch": acked })).await;

    let sender = {
        let (base, http, token, room) = (
            s.base.clone(),
            s.http.clone(),
            alice.token.clone(),
            room.clone(),
        );
        tokio::spawn(async move {
            for i in 0..200 {
                let url =
                    format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/burst{i}");
                let response = http
                    .put(url)
                    .bearer_auth(&token)
                    .json(&json!({ "msgtype": "m.text", "body": format!("m{i}") }))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        })
    };
    // Take part of the burst, acking each frame, then drop the socket mid-burst
    // with one frame received but not acknowledged.
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 40 {
        let sync = next_sync(&mut socket).await;
        seen.extend(timeline_bodies(&sync, &room));
        acked = sync["next_batch"].as_str().unwrap().to_owned();
        send(&mut socket, json!({ "op": "ack", "next_batch": acked })).await;
    }
    let unacked = next_sync(&mut socket).await;
    assert!(!timeline_bodies(&unacked, &room).is_empty());
    drop(socket);

    let mut socket = connect(&s, &bob).await;
    send(&mut socket, json!({ "id": "s", "op": "sync", "since": acked, "filter": { "room": { "timeline": { "limit": 1000 } } } })).await;
    while seen.len() < 200 {
        let sync = next_sync(&mut socket).await;
        seen.extend(timeline_bodies(&sync, &room));
    }
    sender.await.unwrap();
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected, "every message exactly once, in order");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_others_keep_receiving() {
    let server = TestServer::start_with(|c| c.websocket.max_queued_frames = 8).await;
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room_of(server).await;
    let carol = s.register("carol").await;
    s.join(&carol, &room).await;

    // Bob's socket asks for a flood of large responses and never reads them.
    let mut stalled = connect(&s, &bob).await;
    let big = "x".repeat(60_000);
    for i in 0..20 {
        let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/k{i}");
        let put = s
            .put(&path, Some(&alice.token), json!({ "topic": big }))
            .await;
        assert_eq!(put.0, 200);
    }
    let mut reader = connect(&s, &carol).await;
    send(&mut reader, json!({ "id": "s", "op": "sync" })).await;
    next_sync(&mut reader).await;
    for i in 0..400 {
        let frame = json!({ "id": i.to_string(), "method": "GET", "path": format!("/_matrix/client/v3/rooms/{room}/state") });
        if stalled
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // The reader keeps getting messages meanwhile.
    s.send_ok(&alice, &room, "still flowing").await;
    let mut bodies = Vec::new();
    while !bodies.contains(&"still flowing".to_owned()) {
        bodies.extend(timeline_bodies(&next_sync(&mut reader).await, &room));
    }
    // The stalled socket, when it finally reads, finds it was closed with a reason.
    let mut closed = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stalled.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                closed = Some(frame);
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("error before the close frame: {e}"),
            Ok(None) => {
                closed = Some(None);
                break;
            }
            Err(_) => break,
        }
    }
    let frame = closed
        .expect("the stalled socket is closed")
        .expect("with a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("slow"), "{}", frame.reason);
}

/// Connects like `connect`, over a TCP socket with a small receive buffer,
/// so that a client that does not read soon fills what the kernel holds.
async fn connect_with_small_buffer(s: &TestServer, who: &Session) -> Socket {
    let addr = s.base.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let stream = MaybeTlsStream::Plain(stream);
    tokio_tungstenite::client_async(authorized_upgrade(s, who), stream)
        .await
        .expect("upgrade")
        .0
}

#[tokio::test]
async fn a_client_that_pauses_reading_gets_every_frame_in_order() {
    // Frames go straight to the socket while it takes them, and queue once
    // it does not; the queue is large enough here that nobody is cut off.
    let server = TestServer::start_with(|c| c.websocket.max_queued_frames = 1000).await;
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room_of(server).await;
    let mut paused = connect_with_small_buffer(&s, &bob).await;
    send(&mut paused, json!({ "id": "s", "op": "sync" })).await;
    let first = next_sync(&mut paused).await;
    let mut last_batch = first["next_batch"].as_str().unwrap().to_owned();
    let room_id = room.clone();

    // Several MB of frames while Bob reads nothing: more than the kernel
    // buffers hold, so later frames wait in the server's queue. Then more
    // while he catches up, written straight or queued as the socket allows.
    let filler = "x".repeat(60_000);
    let (paused_count, count) = (60, 120);
    for i in 0..paused_count {
        s.send_ok(&alice, &room, &format!("{i} {filler}")).await;
    }
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < count {
            let body = next_sync(&mut paused).await;
            let batch = body["next_batch"].as_str().unwrap().to_owned();
            let position = |t: &str| t[1..t.find('_').unwrap()].parse::<u64>().unwrap();
            assert!(
                position(&batch) > position(&last_batch),
                "{batch} after {last_batch}"
            );
            last_batch = batch;
            for text in timeline_bodies(&body, &room_id) {
                let (i, _) = text.split_once(' ').unwrap();
                seen.push(i.parse::<usize>().unwrap());
            }
        }
        seen
    });
    for i in paused_count..count {
        s.send_ok(&alice, &room, &format!("{i} {filler}")).await;
    }
    let seen = reading.await.unwrap();
    assert_eq!(
        seen,
        (0..count).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

#[tokio::test]
async fn a_connection_that_never_answers_pings_is_closed() {
    let s = TestServer::start_with(|c| c.websocket.ping_interval_ms = 100).await;
    let bob = s.register("bob").await;
    let mut live = connect(&s, &bob).await;
    let mut dead = connect(&s, &bob).await;
    // The live client reads (and so answers pings) for a while; the dead one does not.
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while tokio::time::Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(50), live.next()).await;
    }
    let (code, reason) = close_of(&mut dead).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("pong"), "{reason}");
    let whoami = call(
        &mut live,
        "1",
        "GET",
        "/_matrix/client/v3/account/whoami",
        Value::Null,
    )
    .await;
    assert_eq!(whoami["status"], 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_clients() {
    let s = TestServer::start_with(|c| c.http.trust_forwarded_for = true).await;
    let bob = s.register("bob").await;
    let mut request = ws_url(&s).into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Authorization",
        format!("Bearer {}", bob.token).parse().unwrap(),
    );
    headers.insert("X-Forwarded-For", "203.0.113.7".parse().unwrap());
    let (mut socket, _) = connect_async(request).await.unwrap();
    let devices = call(
        &mut socket,
        "1",
        "GET",
        "/_matrix/client/v3/devices",
        Value::Null,
    )
    .await;
    assert_eq!(devices["status"], 200);
    assert_eq!(
        devices["body"]["devices"][0]["last_seen_ip"], "203.0.113.7",
        "{devices}"
    );
}

#[tokio::test]
async fn logging_out_closes_a_subscribed_socket_at_once() {
    let (s, _alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect(&s, &bob).await;
    send(&mut socket, json!({ "id": "s", "op": "sync" })).await;
    next_sync(&mut socket).await;
    let (status, _) = s
        .post("/_matrix/client/v3/logout", Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    // Well before the subscription's 30 s wait would end by itself.
    let started = std::time::Instant::now();
    let (code, reason) = close_of(&mut socket).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("M_UNKNOWN_TOKEN"), "{reason}");
}

/// What a subscriber collected from its sync frames.
#[derive(Default)]
struct Collected {
    event_ids: Vec<String>,
    bodies: Vec<String>,
    to_device: Vec<u64>,
    topic: Option<String>,
    typing: bool,
    account_data: bool,
    one_time_keys: Option<u64>,
}

impl Collected {
    fn take(&mut self, sync: &Value, room: &str) {
        let joined = &sync["rooms"]["join"][room];
        for event in joined["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            self.event_ids
                .push(event["event_id"].as_str().unwrap().to_owned());
            match event["type"].as_str() {
                Some("m.room.message") => self
                    .bodies
                    .push(event["content"]["body"].as_str().unwrap().to_owned()),
                Some("m.room.topic") => {
                    self.topic = event["content"]["topic"].as_str().map(str::to_owned);
                }
                _ => {}
            }
        }
        for event in joined["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if event["type"] == "m.typing"
                && !event["content"]["user_ids"].as_array().unwrap().is_empty()
            {
                self.typing = true;
            }
        }
        for event in sync["to_device"]["events"].as_array().into_iter().flatten() {
            self.to_device.push(event["content"]["n"].as_u64().unwrap());
        }
        let global = sync["account_data"]["events"]
            .as_array()
            .into_iter()
            .flatten();
        self.account_data |= global.into_iter().any(|e| e["type"] == "org.example.live");
        if let Some(n) = sync["device_one_time_keys_count"]["signed_curve25519"].as_u64() {
            self.one_time_keys = Some(n);
        }
    }
}

/// Frames are built from only the parts whose watches fired: with every kind
/// of change racing (messages from two senders, a join, a topic, typing,
/// to-device, account data, key uploads and claims), nothing is lost or
/// repeated, and the frames hold what `/sync` holds.
#[tokio::test]
async fn live_frames_miss_and_repeat_nothing_while_every_kind_of_change_races() {
    use crate::e2ee::{device_keys, key, one_time_keys};

    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let carol = s.register("carol").await;
    let mut socket = connect(&s, &bob).await;
    let filter = json!({ "room": { "timeline": { "limit": 1000 } } });
    send(
        &mut socket,
        json!({ "id": "s", "op": "sync", "filter": filter }),
    )
    .await;
    let initial = next_sync(&mut socket).await;
    let start = initial["next_batch"].as_str().unwrap().to_owned();

    let messages = |who: Session, tag: &'static str, n: usize| {
        let s = &s;
        let room = room.clone();
        async move {
            for i in 0..n {
                s.send_ok(&who, &room, &format!("{tag}{i}")).await;
            }
        }
    };
    let others = async {
        let (status, body) = s.join(&carol, &room).await;
        assert_eq!(status, 200, "{body}");
        for i in 0..10u64 {
            let body = json!({ "messages": { &bob.user_id: { &bob.device_id: { "n": i } } } });
            let path = format!("/_matrix/client/v3/sendToDevice/org.example.ping/live{i}");
            assert_eq!(s.put(&path, Some(&alice.token), body).await.0, 200);
        }
        let typing = format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id);
        let body = json!({ "typing": true, "timeout": 30000 });
        assert_eq!(s.put(&typing, Some(&alice.token), body).await.0, 200);
        let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
        let body = json!({ "topic": "raced" });
        assert_eq!(s.put(&topic, Some(&alice.token), body).await.0, 200);
        let data = format!(
            "/_matrix/client/v3/user/{}/account_data/org.example.live",
            bob.user_id
        );
        assert_eq!(
            s.put(&data, Some(&bob.token), json!({ "on": true }))
                .await
                .0,
            200
        );
        let ed = key();
        let body = json!({
            "device_keys": device_keys(&bob, &ed),
            "one_time_keys": one_time_keys(&bob, &ed, ["L1".into(), "L2".into(), "L3".into()]),
        });
        let upload = s
            .post("/_matrix/client/v3/keys/upload", Some(&bob.token), body)
            .await;
        assert_eq!(upload.0, 200, "{}", upload.1);
        let claim =
            json!({ "one_time_keys": { &bob.user_id: { &bob.device_id: "signed_curve25519" } } });
        let claimed = s
            .post("/_matrix/client/v3/keys/claim", Some(&alice.token), claim)
            .await;
        assert_eq!(claimed.0, 200, "{}", claimed.1);
    };
    let mut got = Collected::default();
    let collect = async {
        let done = |got: &Collected| {
            got.bodies.len() >= 80
                && got.to_device.len() >= 10
                && got.topic.is_some()
                && got.typing
                && got.account_data
                && got.one_time_keys == Some(2)
        };
        while !done(&got) {
            let sync = next_sync(&mut socket).await;
            got.take(&sync, &room);
            let token = sync["next_batch"].as_str().unwrap();
            send(&mut socket, json!({ "op": "ack", "next_batch": token })).await;
        }
    };
    tokio::join!(
        messages(alice.clone(), "a", 50),
        messages(carol.clone(), "c", 30),
        others,
        collect
    );

    let mut bodies = got.bodies.clone();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        got.bodies.len(),
        "a message came twice: {:?}",
        got.bodies
    );
    assert_eq!(bodies.len(), 80);
    let mut to_device = got.to_device.clone();
    to_device.sort();
    assert_eq!(
        to_device,
        (0..10).collect::<Vec<_>>(),
        "each to-device message once"
    );
    assert_eq!(got.topic.as_deref(), Some("raced"));

    // The same span over /sync: the same timeline events, in the same order.
    let query = format!("since={start}&filter={}", urlencode(&filter.to_string()));
    let http = sync(&s, &bob, &query).await;
    let http_ids: Vec<String> = http["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got.event_ids, http_ids);
}

/// To-device messages in a fresh subscription's initial frame.
async fn initial_to_device(s: &TestServer, who: &Session) -> Vec<Value> {
    let mut socket = connect(s, who).await;
    send(&mut socket, json!({ "id": "s", "op": "sync" })).await;
    let body = next_sync(&mut socket).await;
    body["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_ack_sent_just_before_closing_still_deletes_to_device_messages() {
    let (s, alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let mut socket = connect(&s, &bob).await;
    send(&mut socket, json!({ "id": "s", "op": "sync" })).await;
    next_sync(&mut socket).await;
    let body = json!({ "messages": { &bob.user_id: { &bob.device_id: { "n": 1 } } } });
    let path = "/_matrix/client/v3/sendToDevice/org.example.ping/close1";
    assert_eq!(s.put(path, Some(&alice.token), body).await.0, 200);
    let frame = loop {
        let frame = next_sync(&mut socket).await;
        if frame["to_device"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
        {
            break frame;
        }
    };
    // Until acknowledged, a new subscription gets the message again.
    assert_eq!(initial_to_device(&s, &bob).await.len(), 1);

    // Acks are applied a moment later; closing right away must not lose one.
    // The ack and the close go out in one write.
    let ack = json!({ "op": "ack", "next_batch": frame["next_batch"] });
    socket
        .feed(Message::Text(ack.to_string().into()))
        .await
        .unwrap();
    socket.close(None).await.unwrap();
    let mut left = Vec::new();
    for _ in 0..50 {
        left = initial_to_device(&s, &bob).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_empty(), "acknowledged yet still queued: {left:?}");
}
