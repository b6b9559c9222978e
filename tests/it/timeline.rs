//! The timeline: complete pagination, one linear order under concurrency, and
//! signed PDUs.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::*;

async fn page_all(s: &TestServer, who: &Session, room: &str, dir: &str, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir={dir}&limit={limit}");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, page) = s.get(&path, Some(&who.token)).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
        assert!(events.len() < 5_000, "pagination does not end");
    }
    events
}

#[tokio::test]
async fn messages_pages_through_a_thousand_events_both_ways() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    for i in 0..1000 {
        s.send_ok(&alice, &room, &format!("m{i}")).await;
    }
    let bodies = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let backward = page_all(&s, &alice, &room, "b", 37).await;
    let forward = page_all(&s, &alice, &room, "f", 41).await;
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let mut back_bodies = bodies(&backward);
    back_bodies.reverse();
    assert_eq!(back_bodies, expected);
    assert_eq!(bodies(&forward), expected);
    // Every event exactly once, the room's state events included.
    let ids: HashSet<_> = forward
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), forward.len());
    assert_eq!(backward.len(), forward.len());
    assert_eq!(forward[0]["type"], "m.room.create");

    // `to` bounds a page; a garbage token is refused.
    let (_, first) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"),
            Some(&alice.token),
        )
        .await;
    let end = first["end"].as_str().unwrap();
    let (_, bounded) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=100&from={end}&to={}",
                first["start"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(bounded["chunk"].as_array().unwrap().len(), 10, "{bounded}");
    let bad = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=garbage"),
            Some(&alice.token),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn messages_filter_and_lazy_loaded_members() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    s.send_ok(&bob, &room, "from bob").await;
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/ai.iambig.custom/x1"),
        Some(&alice.token),
        json!({ "v": 1 }),
    )
    .await;
    let filter = json!({ "types": ["m.room.message"], "lazy_load_members": true }).to_string();
    let (status, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={}",
                urlencode(&filter)
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1);
    assert_eq!(chunk[0]["content"]["body"], "from bob");
    let state = page["state"].as_array().unwrap();
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0]["state_key"], "@bob:localhost");
    let filter =
        json!({ "not_senders": ["@bob:localhost"], "not_types": ["m.room.*"] }).to_string();
    let (_, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={}",
                urlencode(&filter)
            ),
            Some(&alice.token),
        )
        .await;
    let types: Vec<_> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, vec![json!("ai.iambig.custom")]);
}

#[tokio::test]
async fn concurrent_senders_get_one_linear_order() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let mut senders = Vec::new();
    for i in 0..20 {
        let who = s.register(&format!("sender{i}")).await;
        assert_eq!(s.join(&who, &room).await.0, 200);
        senders.push(who);
    }
    let mut tasks = Vec::new();
    for (i, who) in senders.into_iter().enumerate() {
        let (s, room) = (s.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                s.send_ok(&who, &room, &format!("{i}-{n}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = page_all(&s, &alice, &room, "f", 100).await;
    let messages: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert_eq!(messages.len(), 200, "no event lost");
    let unique: HashSet<_> = messages
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(unique.len(), 200);
    // Each sender's messages keep their order within the single timeline.
    for i in 0..20 {
        let mine: Vec<_> = messages
            .iter()
            .filter_map(|e| {
                e["content"]["body"]
                    .as_str()
                    .filter(|b| b.starts_with(&format!("{i}-")))
            })
            .collect();
        let expected: Vec<String> = (0..10).map(|n| format!("{i}-{n}")).collect();
        assert_eq!(mine, expected);
    }
    // The PDUs form a chain: every event's prev_events is the one before it.
    let services = s.services();
    let mut previous: Option<String> = None;
    for e in &events {
        let id: ruma::OwnedEventId = e["event_id"].as_str().unwrap().try_into().unwrap();
        let pdu = services.rooms.pdu_by_id(&id).unwrap().unwrap();
        let prev: Vec<String> = pdu.prev_event_ids().iter().map(|p| p.to_string()).collect();
        assert_eq!(prev, previous.iter().cloned().collect::<Vec<_>>());
        previous = Some(id.to_string());
    }
}

#[tokio::test]
async fn stored_events_are_signed_pdus_that_verify() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (_, keys) = s.get("/_matrix/key/v2/server", None).await;
    let (key_id, key) = keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let mut set = ruma::signatures::PublicKeySet::new();
    set.insert(
        key_id.clone(),
        ruma::serde::Base64::parse(key["key"].as_str().unwrap()).unwrap(),
    );
    let mut map = ruma::signatures::PublicKeyMap::new();
    map.insert("localhost".into(), set);

    for version in ["10", "11", "12"] {
        let room = s
            .create_room(&alice, json!({ "room_version": version }))
            .await;
        let event = s.send_ok(&alice, &room, "signed").await;
        let id: ruma::OwnedEventId = event.as_str().try_into().unwrap();
        let pdu = s.services().rooms.pdu_by_id(&id).unwrap().unwrap();
        let object: ruma::CanonicalJsonObject = serde_json::from_str(pdu.json.get()).unwrap();
        for field in [
            "auth_events",
            "prev_events",
            "depth",
            "hashes",
            "signatures",
            "origin_server_ts",
        ] {
            assert!(object.contains_key(field), "v{version}: PDU lacks {field}");
        }
        let version_id = ruma::RoomVersionId::try_from(version).unwrap();
        let rules = version_id.rules().unwrap();
        let verified =
            ruma::signatures::verify_event(&map, &object, &rules).expect("signature verifies");
        assert_eq!(
            verified,
            ruma::signatures::Verified::All,
            "content hash matches too"
        );
        // The event id is the reference hash.
        let hash = ruma::signatures::reference_hash(&object, &rules).unwrap();
        assert_eq!(event, format!("${hash}"));
        // v12: auth_events never name the create event; earlier versions do.
        let create_id = format!("${}", room.trim_start_matches('!'));
        let names_create = pdu.auth_event_ids().iter().any(|a| a.as_str() == create_id);
        assert!(!names_create || version != "12");
    }
}
