//! Typing notifications, receipts and read markers, as sync delivers them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn ephemeral(resp: &Value, room: &str, kind: &str) -> Option<Value> {
    resp["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
        .map(|e| e["content"].clone())
}

#[tokio::test]
async fn typing_is_delivered_and_expires_by_itself() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let token = sync(&s, &bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost");
    let (status, _) = s
        .put(
            &path,
            Some(&alice.token),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await;
    assert_eq!(status, 200);
    let resp = sync(&s, &bob, &format!("since={token}&timeout=5000")).await;
    assert_eq!(
        ephemeral(&resp, &room, "m.typing").unwrap(),
        json!({ "user_ids": ["@alice:localhost"] })
    );
    let token = resp["next_batch"].as_str().unwrap().to_owned();
    // The expiry itself wakes the long-poll.
    let started = Instant::now();
    let resp = sync(&s, &bob, &format!("since={token}&timeout=10000")).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the expiry"
    );
    assert_eq!(
        ephemeral(&resp, &room, "m.typing").unwrap(),
        json!({ "user_ids": [] })
    );

    // Stopping explicitly; others' typing state cannot be set; non-members cannot type.
    s.put(
        &path,
        Some(&alice.token),
        json!({ "typing": true, "timeout": 30000 }),
    )
    .await;
    s.put(&path, Some(&alice.token), json!({ "typing": false }))
        .await;
    assert_error(
        &s.put(
            &path,
            Some(&bob.token),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let eve = s.register("eve").await;
    let eves = format!("/_matrix/client/v3/rooms/{room}/typing/@eve:localhost");
    assert_error(
        &s.put(
            &eves,
            Some(&eve.token),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn receipts_public_private_and_threaded() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let event = s.send_ok(&alice, &room, "read me").await;
    let token = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let receipt = |kind: &str| format!("/_matrix/client/v3/rooms/{room}/receipt/{kind}/{event}");
    assert_eq!(
        s.post(&receipt("m.read"), Some(&bob.token), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        s.post(&receipt("m.read.private"), Some(&bob.token), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        s.post(
            &receipt("m.read"),
            Some(&bob.token),
            json!({ "thread_id": "main" })
        )
        .await
        .0,
        200
    );

    let resp = sync(&s, &alice, &format!("since={token}")).await;
    let content = ephemeral(&resp, &room, "m.receipt").unwrap();
    let read = &content[&event]["m.read"]["@bob:localhost"];
    assert!(read["ts"].is_u64(), "{content}");
    assert!(
        content[&event].get("m.read.private").is_none(),
        "private receipts stay private: {content}"
    );
    // Bob sees his own private receipt.
    let bobs = sync(&s, &bob, "").await;
    let mine = ephemeral(&bobs, &room, "m.receipt").unwrap();
    assert!(
        mine[&event]["m.read.private"]["@bob:localhost"].is_object(),
        "{mine}"
    );

    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/$unknown"),
            Some(&bob.token),
            json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    let eve = s.register("eve").await;
    assert_error(
        &s.post(&receipt("m.read"), Some(&eve.token), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn read_markers_set_fully_read_and_receipts() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let event = s.send_ok(&alice, &room, "marker").await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            Some(&bob.token),
            json!({ "m.fully_read": event, "m.read": event }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, fully) = s
        .get(
            &format!(
                "/_matrix/client/v3/user/@bob:localhost/rooms/{room}/account_data/m.fully_read"
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fully["event_id"], event.as_str());
    let resp = sync(&s, &bob, "").await;
    let room_data = resp["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(room_data.iter().any(|e| e["type"] == "m.fully_read"));
    let receipts = ephemeral(&resp, &room, "m.receipt").unwrap();
    assert!(receipts[&event]["m.read"]["@bob:localhost"].is_object());
}

fn unread(resp: &Value, room: &str) -> (u64, u64) {
    let counts = &resp["rooms"]["join"][room]["unread_notifications"];
    (
        counts["notification_count"].as_u64().unwrap_or(0),
        counts["highlight_count"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn unread_counts_follow_push_rules_and_drop_when_read() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Group" }))
        .await;
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;

    s.send_ok(&alice, &room, "hello all").await;
    let mention = json!({ "msgtype": "m.text", "body": "bob, look", "m.mentions": { "user_ids": ["@bob:localhost"] } });
    let (_, sent) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/mention"),
            Some(&alice.token),
            mention,
        )
        .await;
    let mention_id = sent["event_id"].as_str().unwrap().to_owned();
    // An edit does not notify (.m.rule.suppress_edits); bob's own message does not count for him.
    let edit = json!({ "msgtype": "m.text", "body": "* hello everyone", "m.new_content": { "msgtype": "m.text", "body": "hello everyone" },
                       "m.relates_to": { "rel_type": "m.replace", "event_id": mention_id } });
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/edit"),
        Some(&alice.token),
        edit,
    )
    .await;
    s.send_ok(&bob, &room, "my own").await;

    let resp = sync(&s, &bob, "").await;
    assert_eq!(
        unread(&resp, &room),
        (2, 1),
        "{}",
        resp["rooms"]["join"][&room]["unread_notifications"]
    );
    let carols = sync(&s, &carol, "").await;
    assert_eq!(
        unread(&carols, &room),
        (3, 0),
        "the mention highlights only for bob; carol sees bob's message too"
    );

    // Reading up to the mention clears both.
    let token = resp["next_batch"].as_str().unwrap().to_owned();
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{mention_id}"),
        Some(&bob.token),
        json!({}),
    )
    .await;
    let resp = sync(&s, &bob, &format!("since={token}")).await;
    assert_eq!(unread(&resp, &room), (0, 0), "{resp}");

    // Thread messages count per thread.
    let root = s.send_ok(&alice, &room, "thread root").await;
    let reply = json!({ "msgtype": "m.text", "body": "in thread", "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    let (_, r) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/thr"),
            Some(&alice.token),
            reply,
        )
        .await;
    let reply_id = r["event_id"].as_str().unwrap().to_owned();
    // Without the opt-in, the thread's notification counts in the room's total.
    let resp = sync(&s, &bob, "").await;
    assert_eq!(unread(&resp, &room), (2, 0), "{resp}");
    assert!(resp["rooms"]["join"][&room]["unread_thread_notifications"].is_null());
    let opt_in = format!(
        "filter={}",
        urlencode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#)
    );
    let resp = sync(&s, &bob, &opt_in).await;
    assert_eq!(
        unread(&resp, &room),
        (1, 0),
        "the root is in the main timeline"
    );
    assert_eq!(
        resp["rooms"]["join"][&room]["unread_thread_notifications"][&root]["notification_count"],
        1
    );
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{reply_id}"),
        Some(&bob.token),
        json!({ "thread_id": root }),
    )
    .await;
    let resp = sync(&s, &bob, &opt_in).await;
    assert!(
        resp["rooms"]["join"][&room]["unread_thread_notifications"].is_null(),
        "{resp}"
    );
    assert_eq!(
        unread(&resp, &room),
        (1, 0),
        "a thread receipt leaves the main timeline alone"
    );
}

#[tokio::test]
async fn direct_messages_notify() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(
            &alice,
            json!({ "is_direct": true, "invite": ["@bob:localhost"] }),
        )
        .await;
    s.join(&bob, &room).await;
    s.send_ok(&alice, &room, "one").await;
    s.send_ok(&alice, &room, "two").await;
    let resp = sync(&s, &bob, "").await;
    assert_eq!(unread(&resp, &room), (2, 0));
    let alices = sync(&s, &alice, "").await;
    assert_eq!(
        unread(&alices, &room),
        (0, 0),
        "joins do not notify (.m.rule.member_event), nor one's own messages"
    );
}
