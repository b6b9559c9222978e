//! Messenger extensions: delivered receipts, dialogs and last seen.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

use crate::common::*;

const DELIVERED: &str = "ai.iambig.delivered";

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

/// Events carrying `user`'s delivered receipt in a sync's room section.
fn delivered_in(sync: &Value, room: &str, user: &Session) -> Vec<String> {
    let mut out = Vec::new();
    let events = sync["rooms"]["join"][room]["ephemeral"]["events"].as_array();
    for event in events.into_iter().flatten() {
        if event["type"] != "m.receipt" {
            continue;
        }
        for (event_id, kinds) in event["content"].as_object().unwrap() {
            if kinds[DELIVERED]
                .as_object()
                .is_some_and(|users| users.contains_key(&user.user_id))
            {
                out.push(event_id.clone());
            }
        }
    }
    out
}

/// Initial syncs of `viewer` until `user`'s delivered receipts in `room` are
/// `expected` (receipts are written a moment after the acknowledgement).
async fn delivered_eventually(
    s: &TestServer,
    viewer: &Session,
    room: &str,
    user: &Session,
    expected: &[String],
) -> Value {
    for _ in 0..100 {
        let view = sync(s, viewer, "").await;
        if delivered_in(&view, room, user) == expected {
            return view;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{}'s receipts never became {expected:?}", user.user_id);
}

#[tokio::test]
async fn delivered_appears_after_the_recipients_next_sync_and_not_before() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let bob_first = next_batch(&sync(&s, &bob, "").await);
    let alice_since = next_batch(&sync(&s, &alice, "").await);

    let m1 = s.send_ok(&alice, &room, "one").await;
    // Bob's sync fetches m1: nothing acknowledges it yet.
    let fetched = sync(&s, &bob, &format!("since={bob_first}")).await;
    assert!(
        fetched["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_id"] == m1)
    );
    let alice_view = sync(&s, &alice, &format!("since={alice_since}")).await;
    assert!(
        !delivered_in(&alice_view, &room, &bob).contains(&m1),
        "{alice_view}"
    );
    let alice_since = next_batch(&alice_view);

    // Bob's next sync says he has it.
    sync(&s, &bob, &format!("since={}", next_batch(&fetched))).await;
    let alice_view = sync(&s, &alice, &format!("since={alice_since}&timeout=5000")).await;
    assert_eq!(delivered_in(&alice_view, &room, &bob), vec![m1.clone()]);

    // Later messages move the receipt; bob's own messages never carry it.
    s.send_ok(&alice, &room, "two").await;
    let m3 = s.send_ok(&alice, &room, "three").await;
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    s.send_ok(&bob, &room, "mine").await;
    let fetched = sync(&s, &bob, &format!("since={bob_since}")).await;
    sync(&s, &bob, &format!("since={}", next_batch(&fetched))).await;
    // An initial sync shows the current receipts: only the latest per user.
    delivered_eventually(&s, &alice, &room, &bob, std::slice::from_ref(&m3)).await;

    // Re-syncing with an old token never moves it back.
    sync(&s, &bob, &format!("since={bob_first}")).await;
    // Give a (wrong) receipt the time it would take to be written.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let full = sync(&s, &alice, "").await;
    assert_eq!(delivered_in(&full, &room, &bob), vec![m3]);
}

#[tokio::test]
async fn delivered_receipts_can_be_turned_off() {
    let s = TestServer::start_with(|c| c.messenger.delivered_receipts = false).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let since = next_batch(&sync(&s, &bob, "").await);
    s.send_ok(&alice, &room, "one").await;
    let fetched = sync(&s, &bob, &format!("since={since}")).await;
    sync(&s, &bob, &format!("since={}", next_batch(&fetched))).await;
    assert!(delivered_in(&sync(&s, &alice, "").await, &room, &bob).is_empty());
    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"][DELIVERED], false);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_sync(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame ok");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame["op"] == "sync" {
                return frame["body"].clone();
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_ack_records_delivered() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let url = format!(
        "{}/_matrix/client/unstable/ai.iambig/ws",
        s.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", bob.token).parse().unwrap(),
    );
    let mut socket = connect_async(request).await.expect("upgrade").0;
    let frame = json!({ "id": "s", "op": "sync" }).to_string();
    socket.send(Message::Text(frame.into())).await.unwrap();
    next_sync(&mut socket).await;
    let alice_since = next_batch(&sync(&s, &alice, "").await);
    let m1 = s.send_ok(&alice, &room, "hello").await;
    let pushed = loop {
        let body = next_sync(&mut socket).await;
        if !body["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty())
        {
            break body;
        }
    };
    // Received but not acknowledged: not delivered yet.
    let alice_view = sync(&s, &alice, &format!("since={alice_since}")).await;
    assert!(
        !delivered_in(&alice_view, &room, &bob).contains(&m1),
        "{alice_view}"
    );
    let mut alice_since = next_batch(&alice_view);

    let ack = json!({ "op": "ack", "next_batch": pushed["next_batch"] }).to_string();
    socket.send(Message::Text(ack.into())).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let view = sync(&s, &alice, &format!("since={alice_since}&timeout=5000")).await;
        seen = delivered_in(&view, &room, &bob);
        if !seen.is_empty() {
            break;
        }
        alice_since = next_batch(&view);
    }
    assert_eq!(seen, vec![m1]);
}

const DIALOGS: &str = "/_matrix/client/unstable/ai.iambig/dialogs";

async fn direct_of(s: &TestServer, who: &Session) -> Value {
    let (status, body) = s
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                who.user_id
            ),
            Some(&who.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn concurrent_dialog_calls_make_one_room() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let path = format!("{DIALOGS}/{}", bob.user_id);
    let calls = (0..5).map(|_| s.post(&path, Some(&alice.token), json!({})));
    let answers = futures_util::future::join_all(calls).await;
    let mut rooms: Vec<String> = Vec::new();
    let mut created = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        rooms.push(body["room_id"].as_str().unwrap().to_owned());
        if body["created"] == true {
            created += 1;
        }
    }
    rooms.dedup();
    assert_eq!(rooms.len(), 1, "{answers:?}");
    assert_eq!(created, 1);
    let room = rooms.remove(0);
    assert_eq!(
        direct_of(&s, &alice).await,
        json!({ bob.user_id.clone(): [room.clone()] })
    );

    // Bob was invited to a direct chat; his call joins it rather than making another.
    let invite = sync(&s, &bob, "").await;
    assert!(invite["rooms"]["invite"][&room].is_object(), "{invite}");
    let (status, body) = s
        .post(
            &format!("{DIALOGS}/{}", alice.user_id),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "room_id": room.clone(), "created": false }));
    assert_eq!(
        direct_of(&s, &bob).await,
        json!({ alice.user_id.clone(): [room.clone()] })
    );
    let (_, joined) = s
        .get("/_matrix/client/v3/joined_rooms", Some(&bob.token))
        .await;
    assert_eq!(joined["joined_rooms"], json!([room.clone()]));

    // And again: the same room.
    let (_, body) = s.post(&path, Some(&alice.token), json!({})).await;
    assert_eq!(body, json!({ "room_id": room, "created": false }));
}

#[tokio::test]
async fn dialogs_refuse_self_and_unknown_users() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let token = Some(alice.token.as_str());
    for (target, token, status, errcode) in [
        (alice.user_id.as_str(), token, 400, "M_INVALID_PARAM"),
        ("@nobody:localhost", token, 404, "M_NOT_FOUND"),
        ("not-a-user", token, 400, "M_INVALID_PARAM"),
        ("@bob:localhost", None, 401, "M_MISSING_TOKEN"),
    ] {
        let got = s
            .post(&format!("{DIALOGS}/{target}"), token, json!({}))
            .await;
        assert_error(&got, status, errcode);
    }
}

const LAST_SEEN: &str = "/_matrix/client/unstable/ai.iambig/last_seen";

#[tokio::test]
async fn last_seen_is_visible_to_room_mates_only() {
    let (s, alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let carol = s.register("carol").await;
    sync(&s, &bob, "").await;
    let (status, body) = s
        .get(&format!("{LAST_SEEN}/{}", bob.user_id), Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["last_active_ts"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(body["presence"], "online");
    assert_eq!(body["user_id"], bob.user_id);
    // The same moment presence gives.
    let (_, presence) = s
        .get(
            &format!("/_matrix/client/v3/presence/{}/status", bob.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(presence["presence"], "online");

    assert_error(
        &s.get(&format!("{LAST_SEEN}/{}", bob.user_id), Some(&carol.token))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!("{LAST_SEEN}/@nobody:localhost"),
            Some(&alice.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn last_seen_privacy_is_configurable() {
    let s = TestServer::start_with(|c| c.messenger.last_seen = "nobody".into()).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    sync(&s, &bob, "").await;
    assert_error(
        &s.get(&format!("{LAST_SEEN}/{}", bob.user_id), Some(&alice.token))
            .await,
        403,
        "M_FORBIDDEN",
    );
    let (status, _) = s
        .get(&format!("{LAST_SEEN}/{}", bob.user_id), Some(&bob.token))
        .await;
    assert_eq!(status, 200);

    let s = TestServer::start_with(|c| c.messenger.last_seen = "everyone".into()).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    sync(&s, &bob, "").await;
    let (status, body) = s
        .get(&format!("{LAST_SEEN}/{}", bob.user_id), Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn dialogs_started_from_both_sides_at_once_are_one_room() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let to_bob = format!("{DIALOGS}/{}", bob.user_id);
    let to_alice = format!("{DIALOGS}/{}", alice.user_id);
    let (a, b) = tokio::join!(
        s.post(&to_bob, Some(&alice.token), json!({})),
        s.post(&to_alice, Some(&bob.token), json!({})),
    );
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 200, "{}", b.1);
    assert_eq!(a.1["room_id"], b.1["room_id"]);
    assert_ne!(a.1["created"], b.1["created"]);
    // Both are in it, and it is in both users' m.direct.
    let room = a.1["room_id"].as_str().unwrap().to_owned();
    for (who, other) in [(&alice, &bob), (&bob, &alice)] {
        let (_, joined) = s
            .get("/_matrix/client/v3/joined_rooms", Some(&who.token))
            .await;
        assert_eq!(joined["joined_rooms"], json!([room.clone()]));
        assert_eq!(
            direct_of(&s, who).await,
            json!({ other.user_id.clone(): [room.clone()] })
        );
    }
}

#[tokio::test]
async fn in_a_group_each_sender_alone_learns_their_messages_arrived() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let carol = s.register("carol").await;
    s.join(&carol, &room).await;
    let bob_since = next_batch(&sync(&s, &bob, "").await);
    let from_alice = s.send_ok(&alice, &room, "from alice").await;
    let from_carol = s.send_ok(&carol, &room, "from carol").await;
    // Bob fetches both, then acknowledges them with his next sync.
    let fetched = sync(&s, &bob, &format!("since={bob_since}")).await;
    sync(&s, &bob, &format!("since={}", next_batch(&fetched))).await;

    delivered_eventually(&s, &alice, &room, &bob, std::slice::from_ref(&from_alice)).await;
    let carol_view = delivered_eventually(&s, &carol, &room, &bob, &[from_carol]).await;
    // Nobody is sent receipts on someone else's messages.
    assert!(!delivered_in(&carol_view, &room, &bob).contains(&from_alice));
}
