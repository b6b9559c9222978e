//! `/sync` v3: initial and incremental, long-polling, sections, filters.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::common::*;

fn timeline_bodies(resp: &Value, room: &str) -> Vec<String> {
    resp["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn initial_sync_has_rooms_state_and_timeline() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "name": "Chat", "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    for i in 0..5 {
        s.send_ok(&bob, &room, &format!("filler {i}")).await;
    }
    s.send_ok(&bob, &room, "hello").await;
    s.put(
        "/_matrix/client/v3/user/@alice:localhost/account_data/ai.iambig.x",
        Some(&alice.token),
        json!({ "a": 1 }),
    )
    .await;

    let resp = sync(&s, &alice, "").await;
    assert!(resp["next_batch"].as_str().unwrap().starts_with('s'));
    let joined = &resp["rooms"]["join"][&room];
    let timeline = joined["timeline"]["events"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["content"]["body"], "hello");
    assert_eq!(timeline.len(), 10, "the default limit");
    assert_eq!(joined["timeline"]["limited"], true);
    let state_types: HashSet<_> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(state_types.contains("m.room.create"), "{state_types:?}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 2);
    assert_eq!(joined["summary"]["m.heroes"], json!(["@bob:localhost"]));
    let account: Vec<_> = resp["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert!(account.contains(&json!("ai.iambig.x")));

    // prev_batch continues with /messages.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let (status, older) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={prev}&limit=100"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200);
    let total = timeline.len() + older["chunk"].as_array().unwrap().len();
    let (_, all) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        total,
        all["chunk"].as_array().unwrap().len(),
        "no gap between sync and /messages"
    );
}

#[tokio::test]
async fn incremental_sync_delivers_only_what_is_new() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let first = sync(&s, &alice, "").await;
    let token = first["next_batch"].as_str().unwrap().to_owned();
    let empty = sync(&s, &alice, &format!("since={token}")).await;
    assert!(
        empty["rooms"]["join"].as_object().unwrap().is_empty(),
        "{empty}"
    );
    s.send_ok(&alice, &room, "one").await;
    s.send_ok(&alice, &room, "two").await;
    let next = sync(&s, &alice, &format!("since={token}")).await;
    assert_eq!(timeline_bodies(&next, &room), vec!["one", "two"]);
    assert_eq!(next["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert!(
        next["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The sending device sees its transaction ids.
    let events = next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["unsigned"]["transaction_id"].is_string())
    );
    // An old token still works.
    let again = sync(&s, &alice, &format!("since={token}")).await;
    assert_eq!(timeline_bodies(&again, &room), vec!["one", "two"]);
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let bobs = sync(&s, &bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in ["garbage", "s12", &bobs] {
        let got = s
            .get(
                &format!("/_matrix/client/v3/sync?since={token}"),
                Some(&alice.token),
            )
            .await;
        assert_error(&got, 400, "M_INVALID_PARAM");
    }
    assert_error(
        &s.get("/_matrix/client/v3/sync?filter=999", Some(&alice.token))
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let token = sync(&s, &bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let poll = {
        let (s, bob, token) = (s.clone(), bob.clone(), token.clone());
        tokio::spawn(async move { sync(&s, &bob, &format!("since={token}&timeout=20000")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.send_ok(&alice, &room, "wake up").await;
    let resp = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("returns early")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(timeline_bodies(&resp, &room), vec!["wake up"]);

    // With nothing new, the poll waits for its timeout and returns an empty response.
    let token = resp["next_batch"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let empty = sync(&s, &bob, &format!("since={token}&timeout=500")).await;
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(empty["rooms"]["join"].as_object().unwrap().is_empty());
    assert_eq!(empty["next_batch"], token.as_str());
}

#[tokio::test]
async fn a_chain_of_syncs_sees_every_event_exactly_once_under_concurrent_sends() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let mut senders = Vec::new();
    for i in 0..20 {
        let who = s.register(&format!("sender{i}")).await;
        s.join(&who, &room).await;
        senders.push(who);
    }
    let mut token = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, who)| {
            let (s, room) = (s.clone(), room.clone());
            tokio::spawn(async move {
                for n in 0..25 {
                    s.send_ok(&who, &room, &format!("{i}-{n}")).await;
                }
            })
        })
        .collect();
    let filter = json!({ "room": { "timeline": { "limit": 1000 } } }).to_string();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 500 && Instant::now() < deadline {
        let resp = sync(
            &s,
            &alice,
            &format!("since={token}&timeout=2000&filter={}", urlencode(&filter)),
        )
        .await;
        let joined = &resp["rooms"]["join"][&room];
        assert_ne!(
            joined["timeline"]["limited"], true,
            "the limit is never reached"
        );
        seen.extend(timeline_bodies(&resp, &room));
        token = resp["next_batch"].as_str().unwrap().to_owned();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), 500, "every message once");
    assert_eq!(unique.len(), 500, "none twice");
    for i in 0..20 {
        let mine: Vec<_> = seen
            .iter()
            .filter(|b| b.starts_with(&format!("{i}-")))
            .cloned()
            .collect();
        assert_eq!(
            mine,
            (0..25).map(|n| format!("{i}-{n}")).collect::<Vec<_>>(),
            "in order"
        );
    }
}

#[tokio::test]
async fn invites_joins_and_leaves_land_in_their_sections() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let token = sync(&s, &bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = s
        .create_room(
            &alice,
            json!({ "is_direct": true, "invite": ["@bob:localhost"], "name": "DM" }),
        )
        .await;
    let resp = sync(&s, &bob, &format!("since={token}")).await;
    let invite = &resp["rooms"]["invite"][&room]["invite_state"]["events"];
    let types: HashSet<_> = invite
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains("m.room.name") && types.contains("m.room.create"),
        "{resp}"
    );
    let me = invite
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member")
        .unwrap();
    assert_eq!(me["content"]["is_direct"], true);
    assert_eq!(me["content"]["membership"], "invite");
    let token = resp["next_batch"].as_str().unwrap().to_owned();

    s.join(&bob, &room).await;
    let resp = sync(&s, &bob, &format!("since={token}")).await;
    let joined = &resp["rooms"]["join"][&room];
    assert!(resp["rooms"]["invite"].as_object().unwrap().is_empty());
    // A room new to this device comes whole: its state is in the state
    // section or, for a room this small, in the timeline itself.
    let has_name = |section: &str| {
        joined[section]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    };
    assert!(has_name("state") || has_name("timeline"), "{joined}");
    assert_eq!(joined["timeline"]["events"][0]["type"], "m.room.create");
    let token = resp["next_batch"].as_str().unwrap().to_owned();

    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&alice.token),
        json!({ "user_id": "@bob:localhost" }),
    )
    .await;
    s.send_ok(&alice, &room, "after the kick").await;
    let resp = sync(&s, &bob, &format!("since={token}")).await;
    let left = &resp["rooms"]["leave"][&room];
    let events = left["timeline"]["events"].as_array().unwrap();
    assert_eq!(
        events.last().unwrap()["content"]["membership"],
        "leave",
        "{left}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["content"]["body"] == "after the kick")
    );
    assert!(resp["rooms"]["join"].get(&room).is_none());
}

#[tokio::test]
async fn limited_timelines_carry_the_state_they_skipped() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let token = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
        Some(&alice.token),
        json!({ "topic": "skipped" }),
    )
    .await;
    for i in 0..15 {
        s.send_ok(&alice, &room, &format!("m{i}")).await;
    }
    let resp = sync(&s, &alice, &format!("since={token}")).await;
    let joined = &resp["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(timeline_bodies(&resp, &room).len(), 10);
    let state = joined["state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "skipped"),
        "{state:?}"
    );
}

#[tokio::test]
async fn filters_by_id_and_inline() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let other = s.create_room(&alice, json!({})).await;
    s.join(&bob, &room).await;
    s.send_ok(&bob, &room, "from bob").await;
    s.send_ok(&alice, &other, "elsewhere").await;
    let definition = json!({ "room": { "rooms": [room], "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } });
    let (_, created) = s
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            Some(&alice.token),
            definition.clone(),
        )
        .await;
    let id = created["filter_id"].as_str().unwrap();
    for filter in [id.to_owned(), urlencode(&definition.to_string())] {
        let resp = sync(&s, &alice, &format!("filter={filter}")).await;
        let rooms = resp["rooms"]["join"].as_object().unwrap();
        assert_eq!(rooms.len(), 1, "only the filtered room");
        assert_eq!(timeline_bodies(&resp, &room), vec!["from bob"]);
        let members: Vec<_> = rooms[&room]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            members,
            vec!["@bob:localhost"],
            "lazy-loaded: only the timeline's sender"
        );
    }
}

#[tokio::test]
async fn lazy_loading_sends_new_senders_in_incremental_syncs() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    s.send_ok(&alice, &room, "hello").await;
    let filter = urlencode(
        &json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } })
            .to_string(),
    );
    let resp = sync(&s, &alice, &format!("filter={filter}")).await;
    let token = resp["next_batch"].as_str().unwrap().to_owned();
    // Bob joined before the token and alice's client never loaded his member
    // event; his first message (not a limited timeline) must bring it.
    s.send_ok(&bob, &room, "hi").await;
    let resp = sync(&s, &alice, &format!("filter={filter}&since={token}")).await;
    let joined = &resp["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], false);
    assert!(
        joined["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost"),
        "{joined}"
    );
}

#[tokio::test]
async fn a_profile_change_is_not_a_new_join() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    s.send_ok(&alice, &room, "before").await;
    let token = sync(&s, &bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // A per-room nick: a new join event for a member who stays joined.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
            Some(&bob.token),
            json!({ "membership": "join", "displayname": "Bobby" }),
        )
        .await;
    assert_eq!(status, 200);
    let resp = sync(&s, &bob, &format!("since={token}")).await;
    let joined = &resp["rooms"]["join"][&room];
    let timeline = joined["timeline"]["events"].as_array().unwrap();
    assert_eq!(timeline.len(), 1, "only the new member event: {joined}");
    assert_eq!(timeline[0]["content"]["displayname"], "Bobby");
    assert_eq!(joined["timeline"]["limited"], false);
    assert!(
        joined["state"]["events"]
            .as_array()
            .is_none_or(|events| events.is_empty()),
        "no state resent: {joined}"
    );
}

#[tokio::test]
async fn an_empty_limited_timeline_paginates_from_the_end() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.send_ok(&alice, &room, "latest").await;
    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 0 } } }).to_string());
    let resp = sync(&s, &alice, &format!("filter={filter}")).await;
    let timeline = &resp["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true, "{timeline}");
    let prev = timeline["prev_batch"].as_str().unwrap();
    let (status, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={prev}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["chunk"][0]["content"]["body"], "latest", "{page}");
}

#[tokio::test]
async fn full_state_returns_every_room_at_once() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Hall" }))
        .await;
    let token = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let resp = sync(
        &s,
        &alice,
        &format!("since={token}&full_state=true&timeout=20000"),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "no long-poll");
    let state = resp["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Hall"),
        "the room's whole state, though nothing changed: {resp}"
    );
}

#[tokio::test]
async fn a_waiting_sync_ends_cleanly_at_shutdown() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let token = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!(
        "{}/_matrix/client/v3/sync?since={token}&timeout=60000",
        s.base
    );
    let request = s.http.get(url).bearer_auth(&alice.token).send();
    let poll = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    s.stop().await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the poll ends")
        .unwrap();
    if let Ok(resp) = outcome {
        assert_eq!(resp.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown did not wait for the poll's timeout"
    );
}

#[tokio::test]
async fn to_device_messages_are_delivered_once_and_survive_restarts() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob_phone = s.register("bob").await;
    let bob_laptop = s.login_ok("bob").await;
    let token = sync(&s, &bob_phone, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let encrypted = json!({ "algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "abc", "ciphertext": { "k": { "type": 0, "body": "opaque" } } });
    let path = "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1";
    let body =
        json!({ "messages": { "@bob:localhost": { bob_phone.device_id.clone(): encrypted } } });
    assert_eq!(s.put(path, Some(&alice.token), body.clone()).await.0, 200);
    assert_eq!(
        s.put(path, Some(&alice.token), body).await.0,
        200,
        "a retry"
    );
    let all = json!({ "messages": { "@bob:localhost": { "*": { "hello": "everyone" } } } });
    s.put(
        "/_matrix/client/v3/sendToDevice/ai.iambig.ping/t2",
        Some(&alice.token),
        all,
    )
    .await;

    s.restart().await;
    let resp = sync(&s, &bob_phone, &format!("since={token}")).await;
    let events = resp["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the retry added nothing: {events:?}");
    assert_eq!(events[0]["type"], "m.room.encrypted");
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["content"], encrypted, "passed through untouched");
    assert_eq!(events[1]["content"], json!({ "hello": "everyone" }));

    // Not acknowledged yet: the same token gets them again; the next token does not.
    let again = sync(&s, &bob_phone, &format!("since={token}")).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 2);
    let next = again["next_batch"].as_str().unwrap();
    let after = sync(&s, &bob_phone, &format!("since={next}")).await;
    assert!(after["to_device"]["events"].as_array().unwrap().is_empty());
    // The laptop got only the message for all devices.
    let laptop = sync(&s, &bob_laptop, "").await;
    assert_eq!(laptop["to_device"]["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn state_after_when_asked_for() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({ "name": "Before" })).await;
    let first = sync(&s, &alice, "use_state_after=true").await;
    let joined = &first["rooms"]["join"][&room];
    assert!(
        joined.get("state").is_none(),
        "state_after replaces state: {joined}"
    );
    let names: Vec<_> = joined["state_after"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.name")
        .collect();
    assert_eq!(names.len(), 1, "the whole state at the end of the timeline");
    let token = first["next_batch"].as_str().unwrap().to_owned();
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
        Some(&alice.token),
        json!({ "name": "After" }),
    )
    .await;
    let next = sync(&s, &alice, &format!("since={token}&use_state_after=true")).await;
    let after = next["rooms"]["join"][&room]["state_after"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(
        after.len(),
        1,
        "only the change, even though it is in the timeline too: {after:?}"
    );
    assert_eq!(after[0]["content"]["name"], "After");
}

#[tokio::test]
async fn event_fields_trim_events() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    s.send_ok(&alice, &room, "trimmed").await;
    let filter =
        json!({ "event_fields": ["type", "content.body"], "room": { "timeline": { "limit": 1 } } })
            .to_string();
    let resp = sync(&s, &alice, &format!("filter={}", urlencode(&filter))).await;
    let events = resp["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(
        events[0],
        json!({ "type": "m.room.message", "content": { "body": "trimmed" } })
    );
}
