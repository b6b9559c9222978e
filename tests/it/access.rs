//! Join rules (knock, restricted) and history visibility.

use serde_json::{Value, json};

use crate::common::*;

async fn set_state(s: &TestServer, who: &Session, room: &str, kind: &str, content: Value) {
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}"),
            Some(&who.token),
            content,
        )
        .await;
    assert_eq!(status, 200, "{kind}: {body}");
}

#[tokio::test]
async fn knocking_then_being_let_in() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s.create_room(&alice, json!({})).await;
    // Invite-only rooms refuse knocks.
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/knock/{room}"),
            Some(&bob.token),
            json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    set_state(
        &s,
        &alice,
        &room,
        "m.room.join_rules",
        json!({ "join_rule": "knock" }),
    )
    .await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/knock/{room}"),
            Some(&bob.token),
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let (_, member) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(member["membership"], "knock");
    assert_eq!(member["reason"], "let me in");
    // A knock is not a join.
    assert_error(&s.join(&bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(s.invite(&alice, &room, "@bob:localhost").await.0, 200);
    assert_eq!(s.join(&bob, &room).await.0, 200);
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let space = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let room = s.create_room(&alice, json!({})).await;
    set_state(
        &s,
        &alice,
        &room,
        "m.room.join_rules",
        json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] }),
    )
    .await;
    assert_error(&s.join(&bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(s.join(&bob, &space).await.0, 200);
    let (status, body) = s.join(&bob, &room).await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(
        member["join_authorised_via_users_server"],
        "@alice:localhost"
    );
    assert_error(&s.join(&carol, &room).await, 403, "M_FORBIDDEN");
}

async fn visibility_setup(setting: &str) -> (TestServer, Session, Session, String, String) {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    set_state(
        &s,
        &alice,
        &room,
        "m.room.history_visibility",
        json!({ "history_visibility": setting }),
    )
    .await;
    let early = s.send_ok(&alice, &room, "before bob").await;
    (s, alice, bob, room, early)
}

async fn can_read(s: &TestServer, who: &Session, room: &str, event: &str) -> bool {
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            Some(&who.token),
        )
        .await;
    status == 200
}

#[tokio::test]
async fn shared_history_is_visible_after_joining() {
    let (s, _alice, bob, room, early) = visibility_setup("shared").await;
    assert!(
        !can_read(&s, &bob, &room, &early).await,
        "not before joining"
    );
    s.join(&bob, &room).await;
    assert!(can_read(&s, &bob, &room, &early).await);
}

#[tokio::test]
async fn joined_history_starts_at_the_join() {
    let (s, alice, bob, room, early) = visibility_setup("joined").await;
    s.join(&bob, &room).await;
    let later = s.send_ok(&alice, &room, "after bob").await;
    assert!(!can_read(&s, &bob, &room, &early).await);
    assert!(can_read(&s, &bob, &room, &later).await);
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&bob.token),
        )
        .await;
    let bodies: Vec<_> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["after bob"]);
}

#[tokio::test]
async fn invited_history_starts_at_the_invite() {
    let (s, alice, bob, room, early) = visibility_setup("invited").await;
    s.invite(&alice, &room, "@bob:localhost").await;
    let while_invited = s.send_ok(&alice, &room, "while invited").await;
    s.join(&bob, &room).await;
    assert!(!can_read(&s, &bob, &room, &early).await);
    assert!(can_read(&s, &bob, &room, &while_invited).await);
}

#[tokio::test]
async fn world_readable_rooms_are_readable_by_anyone() {
    let (s, _alice, bob, room, early) = visibility_setup("world_readable").await;
    assert!(can_read(&s, &bob, &room, &early).await);
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.send_text(&bob, &room, "but not writable").await,
        403,
        "M_FORBIDDEN",
    );
}
