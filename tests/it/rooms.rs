//! Rooms: creation, membership, permissions, sending and reading.

use serde_json::{Value, json};

use crate::common::*;

fn members_of(state: &Value) -> Vec<(String, String)> {
    state
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn create_room_with_each_version_and_preset() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    for version in ["10", "11", "12"] {
        let room = s
            .create_room(&alice, json!({ "room_version": version, "name": "Test", "topic": "About", "preset": "public_chat" }))
            .await;
        if version == "12" {
            assert!(
                !room.contains(':'),
                "v12 room ids have no server part: {room}"
            );
        } else {
            assert!(room.ends_with(":localhost"), "{room}");
        }
        let (status, state) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, 200, "{state}");
        let find = |kind: &str| {
            state
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == kind)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(find("m.room.create")["content"]["room_version"], version);
        assert_eq!(find("m.room.join_rules")["content"]["join_rule"], "public");
        assert_eq!(
            find("m.room.history_visibility")["content"]["history_visibility"],
            "shared"
        );
        assert_eq!(find("m.room.name")["content"]["name"], "Test");
        assert_eq!(find("m.room.topic")["content"]["topic"], "About");
        let pl = &find("m.room.power_levels")["content"];
        if version == "12" {
            assert!(
                pl["users"].get("@alice:localhost").is_none(),
                "v12 creators are not listed: {pl}"
            );
        } else {
            assert_eq!(pl["users"]["@alice:localhost"], 100);
        }
        assert_eq!(
            members_of(&state),
            vec![("@alice:localhost".to_owned(), "join".to_owned())]
        );
    }
    let bad = s
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "room_version": "1" }),
        )
        .await;
    assert_error(&bad, 400, "M_UNSUPPORTED_ROOM_VERSION");
    let (status, rooms) = s
        .get("/_matrix/client/v3/joined_rooms", Some(&alice.token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(rooms["joined_rooms"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_direct_chat_with_invite_and_join() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "is_direct": true, "invite": ["@bob:localhost"], "preset": "trusted_private_chat" }))
        .await;
    let (status, member) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(member, json!({ "membership": "invite", "is_direct": true }));
    // Before joining, bob cannot send.
    assert_error(&s.send_text(&bob, &room, "hi").await, 403, "M_FORBIDDEN");
    let (status, body) = s.join(&bob, &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let event = s.send_ok(&bob, &room, "hello alice").await;
    let (status, got) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["content"]["body"], "hello alice");
    assert_eq!(got["sender"], "@bob:localhost");
    assert!(got["unsigned"]["age"].is_u64());
    let (_, joined) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(joined["joined"].as_object().unwrap().len(), 2);
    assert_eq!(joined["joined"]["@bob:localhost"]["display_name"], "bob");
}

#[tokio::test]
async fn power_levels_guard_names_and_kicks() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "room_version": "11" }),
        )
        .await;
    assert_eq!(s.join(&bob, &room).await.0, 200);
    assert_eq!(s.join(&carol, &room).await.0, 200);

    let rename = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            Some(&bob.token),
            json!({ "name": "mine" }),
        )
        .await;
    assert_error(&rename, 403, "M_FORBIDDEN");
    let kick = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&bob.token),
            json!({ "user_id": "@carol:localhost" }),
        )
        .await;
    assert_error(&kick, 403, "M_FORBIDDEN");
    // Raising one's own power is refused too.
    let pl = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&bob.token),
            json!({ "users": { "@bob:localhost": 100 } }),
        )
        .await;
    assert_error(&pl, 403, "M_FORBIDDEN");

    // The trailing-slash and no-slash forms of an empty state key both work.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice.token),
            json!({ "name": "Ours" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, name) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            Some(&carol.token),
        )
        .await;
    assert_eq!(name, json!({ "name": "Ours" }));

    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice.token),
            json!({ "user_id": "@carol:localhost", "reason": "bye" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &s.send_text(&carol, &room, "still here?").await,
        403,
        "M_FORBIDDEN",
    );
    // A kicked user may rejoin a public room.
    assert_eq!(s.join(&carol, &room).await.0, 200);
}

#[tokio::test]
async fn non_members_cannot_read_or_send_and_bans_stick() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let eve = s.register("eve").await;
    let room = s.create_room(&alice, json!({})).await; // private chat: invite only
    let event = s.send_ok(&alice, &room, "secret").await;
    assert_error(
        &s.send_text(&eve, &room, "let me in").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            Some(&eve.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            Some(&eve.token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(&eve.token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/members"),
            Some(&eve.token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&s.join(&eve, &room).await, 403, "M_FORBIDDEN");

    let public = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(s.join(&eve, &public).await.0, 200);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{public}/ban"),
            Some(&alice.token),
            json!({ "user_id": "@eve:localhost" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_error(&s.join(&eve, &public).await, 403, "M_FORBIDDEN");
    assert_error(&s.send_text(&eve, &public, "hi").await, 403, "M_FORBIDDEN");
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{public}/unban"),
            Some(&alice.token),
            json!({ "user_id": "@eve:localhost" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.join(&eve, &public).await.0, 200);
    // Only members can invite; an invite to a private room lets eve in.
    assert_error(
        &s.invite(&eve, &room, "@eve:localhost").await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(s.invite(&alice, &room, "@eve:localhost").await.0, 200);
    assert_eq!(s.join(&eve, &room).await.0, 200);
    assert_error(
        &s.post(
            "/_matrix/client/v3/rooms/!nowhere:localhost/join",
            Some(&eve.token),
            json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn leave_and_forget() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let before = s.send_ok(&alice, &room, "while bob is here").await;
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&bob.token),
            json!({}),
        )
        .await,
        400,
        "M_UNKNOWN",
    );
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let after = s.send_ok(&alice, &room, "after bob left").await;
    // History up to the leave stays readable, later events are not.
    assert_eq!(
        s.get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{before}"),
            Some(&bob.token)
        )
        .await
        .0,
        200
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{after}"),
            Some(&bob.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    let (_, rooms) = s
        .get("/_matrix/client/v3/joined_rooms", Some(&bob.token))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([]));
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sends_are_idempotent_per_transaction() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/txn-1");
    let content = json!({ "msgtype": "m.text", "body": "once" });
    let (_, first) = s.put(&path, Some(&alice.token), content.clone()).await;
    let (_, again) = s.put(&path, Some(&alice.token), content.clone()).await;
    assert_eq!(first["event_id"], again["event_id"]);
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&alice.token),
        )
        .await;
    let bodies: Vec<_> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["body"] == "once")
        .collect();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["unsigned"]["transaction_id"], "txn-1");
    // Another device of the same user has its own transaction ids.
    let other = s.login_ok("alice").await;
    let (_, third) = s.put(&path, Some(&other.token), content.clone()).await;
    assert_ne!(third["event_id"], first["event_id"]);
    // The same id in another room, or for another event type, is another send.
    let elsewhere = s.create_room(&alice, json!({})).await;
    let (status, fourth) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{elsewhere}/send/m.room.message/txn-1"),
            Some(&alice.token),
            content,
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(fourth["event_id"], first["event_id"]);
    let (status, fifth) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/txn-1"),
            Some(&alice.token),
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": first["event_id"], "key": "👍" } }),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(fifth["event_id"], first["event_id"]);
}

#[tokio::test]
async fn forwarded_content_round_trips_exactly() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let a = s.create_room(&alice, json!({})).await;
    let b = s.create_room(&alice, json!({})).await;
    let content = json!({
        "msgtype": "m.image", "body": "cat.png", "url": "mxc://localhost/abc",
        "info": { "w": 640, "h": 480, "mimetype": "image/png", "size": 123456, "thumbnail_info": { "w": 64 } },
        "ai.iambig.forwarded": { "from_room": a, "n": [1, -2, 9007199254740991i64] },
        "unicode": "héllo 👋 \u{0000}"
    });
    let (status, sent) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{b}/send/m.room.message/fwd"),
            Some(&alice.token),
            content.clone(),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let (_, event) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{b}/event/{}",
                sent["event_id"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(event["content"], content);
    // Floats are not canonical JSON; the spec forbids them in events.
    let bad = s
        .put(
            &format!("/_matrix/client/v3/rooms/{b}/send/m.room.message/float"),
            Some(&alice.token),
            json!({ "body": "x", "v": 1.5 }),
        )
        .await;
    assert_error(&bad, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn redaction_strips_content_and_survives_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let event = s.send_ok(&bob, &room, "oops").await;
    let alices = s.send_ok(&alice, &room, "mine").await;
    // Bob cannot redact alice's event (redact level 50), but can redact his own.
    let denied = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{alices}/r0"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_error(&denied, 403, "M_FORBIDDEN");
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{event}/r1"),
            Some(&bob.token),
            json!({ "reason": "typo" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let check = |got: &Value| {
        assert_eq!(got["content"], json!({}), "{got}");
        assert_eq!(
            got["unsigned"]["redacted_because"]["content"]["reason"],
            "typo"
        );
    };
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{event}");
    check(&s.get(&path, Some(&alice.token)).await.1);
    s.restart().await;
    check(&s.get(&path, Some(&alice.token)).await.1);
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"),
            Some(&alice.token),
        )
        .await;
    let redacted = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == event.as_str())
        .unwrap();
    check(redacted);
}

#[tokio::test]
async fn aliases_and_the_public_directory() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "room_alias_name": "lobby", "visibility": "public", "name": "The Lobby", "preset": "public_chat" }))
        .await;
    let (status, body) = s
        .get("/_matrix/client/v3/directory/room/%23lobby:localhost", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let taken = s
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "room_alias_name": "lobby" }),
        )
        .await;
    assert_error(&taken, 400, "M_ROOM_IN_USE");
    let (status, body) = s.join(&bob, "%23lobby:localhost").await;
    assert_eq!(
        (status.as_u16(), body["room_id"].as_str()),
        (200, Some(room.as_str()))
    );

    let (status, _) = s
        .put(
            "/_matrix/client/v3/directory/room/%23hall:localhost",
            Some(&bob.token),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, aliases) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/aliases"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(aliases["aliases"].as_array().unwrap().len(), 2);
    let canonical = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias"),
            Some(&alice.token),
            json!({ "alias": "#nowhere:localhost" }),
        )
        .await;
    assert_error(&canonical, 400, "M_BAD_ALIAS");

    let (_, dir) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(dir["chunk"][0]["room_id"], room.as_str());
    assert_eq!(dir["chunk"][0]["name"], "The Lobby");
    assert_eq!(dir["chunk"][0]["num_joined_members"], 2);
    assert_eq!(dir["chunk"][0]["canonical_alias"], "#lobby:localhost");
    let (_, found) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            Some(&bob.token),
            json!({ "filter": { "generic_search_term": "lobb" } }),
        )
        .await;
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    let (_, none) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            Some(&bob.token),
            json!({ "filter": { "generic_search_term": "zzz" } }),
        )
        .await;
    assert_eq!(none["chunk"].as_array().unwrap().len(), 0);

    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            Some(&bob.token),
            json!({ "visibility": "private" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            Some(&alice.token),
            json!({ "visibility": "private" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.get(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            None
        )
        .await
        .1,
        json!({ "visibility": "private" })
    );

    // Bob created #hall, so he may delete it; he may not delete alice's.
    assert_error(
        &s.delete(
            "/_matrix/client/v3/directory/room/%23lobby:localhost",
            Some(&bob.token),
            None,
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        s.delete(
            "/_matrix/client/v3/directory/room/%23hall:localhost",
            Some(&bob.token),
            None
        )
        .await
        .0,
        200
    );
    assert_error(
        &s.get("/_matrix/client/v3/directory/room/%23hall:localhost", None)
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn members_filters_and_history_at_a_token() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let (_, early) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            Some(&alice.token),
        )
        .await;
    let token_before_carol = early["start"].as_str().unwrap().to_owned();
    s.join(&carol, &room).await;
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob.token),
        json!({}),
    )
    .await;

    let (status, all) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(all["chunk"].as_array().unwrap().len(), 3);
    let (_, joined) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?membership=join"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(joined["chunk"].as_array().unwrap().len(), 2);
    let (_, not_left) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?not_membership=leave"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(not_left["chunk"].as_array().unwrap().len(), 2);
    let (_, then) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?at={token_before_carol}"),
            Some(&alice.token),
        )
        .await;
    let then: Vec<_> = then["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        then.contains(&"@bob:localhost".to_owned())
            && !then.contains(&"@carol:localhost".to_owned()),
        "{then:?}"
    );

    // Bob, gone, cannot see later members by asking for a later token.
    let dave = s.register("dave").await;
    s.join(&dave, &room).await;
    let (_, latest) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            Some(&alice.token),
        )
        .await;
    let token_after_dave = latest["start"].as_str().unwrap();
    let (status, seen) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?at={token_after_dave}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        !seen["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["state_key"] == "@dave:localhost"),
        "{seen}"
    );
}

#[tokio::test]
async fn server_key_is_served_and_self_signed() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server_name"], "localhost");
    let keys = body["verify_keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1);
    let (key_id, key) = keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"));
    let object: ruma::CanonicalJsonObject = serde_json::from_value(body.clone()).unwrap();
    let mut set = ruma::signatures::PublicKeySet::new();
    set.insert(
        key_id.clone(),
        ruma::serde::Base64::parse(key["key"].as_str().unwrap()).unwrap(),
    );
    let mut map = ruma::signatures::PublicKeyMap::new();
    map.insert("localhost".into(), set);
    ruma::signatures::verify_json(&map, &object)
        .expect("the response verifies with the key it names");
}

#[tokio::test]
async fn identical_concurrent_creations_get_distinct_rooms() {
    // In v12 a room id is the hash of its create event; identical requests in
    // the same millisecond must still found different rooms.
    let s = std::sync::Arc::new(TestServer::start().await);
    let alice = s.register("alice").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, alice) = (s.clone(), alice.clone());
            tokio::spawn(
                async move { s.create_room(&alice, json!({ "room_version": "12" })).await },
            )
        })
        .collect();
    let mut rooms = std::collections::HashSet::new();
    for t in tasks {
        rooms.insert(t.await.unwrap());
    }
    assert_eq!(rooms.len(), 8);
}
