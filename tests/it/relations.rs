//! Relations (edits, threads, reactions, references), context, search,
//! timestamps, reports, summaries and upgrades.

use serde_json::{Value, json};

use crate::common::*;

async fn send(s: &TestServer, who: &Session, room: &str, kind: &str, content: Value) -> String {
    let txn = format!("x{}", rand_suffix());
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            Some(&who.token),
            content,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn edits_are_bundled_and_only_the_senders_count() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let original = s.send_ok(&alice, &room, "helo").await;
    let edit = |body: &str| {
        json!({ "msgtype": "m.text", "body": format!("* {body}"), "m.new_content": { "msgtype": "m.text", "body": body },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } })
    };
    send(&s, &alice, &room, "m.room.message", edit("hello")).await;
    let latest = send(&s, &alice, &room, "m.room.message", edit("hello!")).await;
    send(&s, &bob, &room, "m.room.message", edit("hijacked")).await;

    let (_, event) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{original}"),
            Some(&bob.token),
        )
        .await;
    let bundled = &event["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(bundled["event_id"], latest.as_str(), "{event}");
    assert_eq!(bundled["content"]["m.new_content"]["body"], "hello!");
    assert_eq!(
        event["content"]["body"], "helo",
        "the original content is served as sent"
    );

    // Redacting the latest edit falls back to the one before.
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/redact/{latest}/r"),
        Some(&alice.token),
        json!({}),
    )
    .await;
    let (_, event) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{original}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"],
        "hello"
    );

    let (status, rel) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/relations/{original}/m.replace"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{rel}");
    assert_eq!(
        rel["chunk"].as_array().unwrap().len(),
        2,
        "the redacted edit is gone, bob's stays listed: {rel}"
    );
}

#[tokio::test]
async fn threads_summaries_and_the_threads_list() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let root_a = s.send_ok(&alice, &room, "thread A").await;
    let root_b = s.send_ok(&bob, &room, "thread B").await;
    let reply = |root: &str, body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": { "event_id": root } } });
    send(&s, &bob, &room, "m.room.message", reply(&root_a, "a1")).await;
    send(&s, &bob, &room, "m.room.message", reply(&root_b, "b1")).await;
    let last_a = send(&s, &bob, &room, "m.room.message", reply(&root_a, "a2")).await;

    let (_, root) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{root_a}"),
            Some(&alice.token),
        )
        .await;
    let thread = &root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 2, "{root}");
    assert_eq!(thread["latest_event"]["event_id"], last_a.as_str());
    assert_eq!(
        thread["current_user_participated"], true,
        "alice wrote the root"
    );

    let (status, list) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let roots: Vec<_> = list["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        roots,
        vec![root_a.clone(), root_b.clone()],
        "most recent activity first"
    );
    let (_, mine) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?include=participated"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(mine["chunk"].as_array().unwrap().len(), 1);
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1"),
            Some(&alice.token),
        )
        .await;
    let next = page["next_batch"].as_str().unwrap();
    let (_, page2) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1&from={next}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(page2["chunk"][0]["event_id"], root_b.as_str());
}

#[tokio::test]
async fn relations_filtering_pagination_and_recursion() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let target = s.send_ok(&alice, &room, "react to me").await;
    for key in ["👍", "🎉", "👍"] {
        let who = if key == "🎉" { &alice } else { &bob };
        send(&s, who, &room, "m.reaction", json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } })).await;
    }
    let reference = send(&s, &bob, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "see above", "m.relates_to": { "rel_type": "m.reference", "event_id": target } })).await;
    let nested = send(&s, &alice, &room, "m.reaction", json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": reference, "key": "✅" } })).await;

    let path = |suffix: &str| format!("/_matrix/client/v1/rooms/{room}/relations/{target}{suffix}");
    let (_, all) = s.get(&path(""), Some(&alice.token)).await;
    assert_eq!(all["chunk"].as_array().unwrap().len(), 4);
    let (_, reactions) = s
        .get(&path("/m.annotation/m.reaction"), Some(&alice.token))
        .await;
    assert_eq!(reactions["chunk"].as_array().unwrap().len(), 3);
    let (_, none) = s
        .get(&path("/m.annotation/m.room.message"), Some(&alice.token))
        .await;
    assert_eq!(none["chunk"].as_array().unwrap().len(), 0);

    let (_, first) = s.get(&path("?limit=2"), Some(&alice.token)).await;
    assert_eq!(first["chunk"].as_array().unwrap().len(), 2);
    let next = first["next_batch"].as_str().unwrap();
    let (_, second) = s
        .get(&path(&format!("?limit=2&from={next}")), Some(&alice.token))
        .await;
    let ids: Vec<_> = first["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["chunk"].as_array().unwrap())
        .map(|e| e["event_id"].clone())
        .collect();
    let unique: std::collections::HashSet<_> = ids.iter().map(|v| v.to_string()).collect();
    assert_eq!(unique.len(), 4, "pages do not overlap");
    assert!(second["next_batch"].is_null());
    // Newest first by default; dir=f gives oldest first.
    assert_eq!(all["chunk"][0]["event_id"], reference.as_str());
    let (_, forward) = s.get(&path("?dir=f"), Some(&alice.token)).await;
    assert_eq!(forward["chunk"][3]["event_id"], reference.as_str());

    let (_, deep) = s.get(&path("?recurse=true"), Some(&alice.token)).await;
    let deep_ids: Vec<_> = deep["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(deep_ids.contains(&nested), "{deep}");
    assert_eq!(deep["recursion_depth"], 1);

    // References are bundled.
    let (_, event) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{target}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.reference"]["chunk"][0]["event_id"],
        reference.as_str()
    );
    // Outsiders see nothing.
    let eve = s.register("eve").await;
    let private = s.create_room(&alice, json!({})).await;
    let secret = s.send_ok(&alice, &private, "x").await;
    assert_error(
        &s.get(
            &format!("/_matrix/client/v1/rooms/{private}/relations/{secret}"),
            Some(&eve.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn context_around_an_event() {
    let (s, alice, _bob, room) = alice_and_bob_in_a_public_room().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(s.send_ok(&alice, &room, &format!("c{i}")).await);
    }
    let (status, ctx) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", ids[5]),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["content"]["body"], "c5");
    let before: Vec<_> = ctx["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].clone())
        .collect();
    let after: Vec<_> = ctx["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].clone())
        .collect();
    assert_eq!(before, vec![json!("c4"), json!("c3")]);
    assert_eq!(after, vec![json!("c6"), json!("c7")]);
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    // The tokens continue pagination from both ends.
    let (_, older) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={}",
                ctx["start"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(older["chunk"][0]["content"]["body"], "c2");
    let (_, newer) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1&from={}",
                ctx["end"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(newer["chunk"][0]["content"]["body"], "c8");
}

#[tokio::test]
async fn search_finds_visible_messages_by_rank_or_time() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    s.send_ok(&alice, &room, "the quick brown fox").await;
    s.send_ok(&bob, &room, "fox fox fox").await;
    s.send_ok(&bob, &room, "nothing to see").await;
    let private = s
        .create_room(&alice, json!({ "name": "secret fox den" }))
        .await;
    s.send_ok(&alice, &private, "hidden fox").await;

    let query = |term: &str, order: &str| json!({ "search_categories": { "room_events": { "search_term": term, "order_by": order } } });
    let (status, res) = s
        .post(
            "/_matrix/client/v3/search",
            Some(&bob.token),
            query("Fox", "rank"),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let events = &res["search_categories"]["room_events"];
    assert_eq!(events["count"], 2, "bob is not in the private room: {res}");
    assert_eq!(
        events["results"][0]["result"]["content"]["body"],
        "fox fox fox"
    );
    assert!(
        events["highlights"]
            .as_array()
            .unwrap()
            .contains(&json!("fox"))
    );
    let (_, recent) = s
        .post(
            "/_matrix/client/v3/search",
            Some(&bob.token),
            query("fox", "recent"),
        )
        .await;
    assert_eq!(
        recent["search_categories"]["room_events"]["results"][0]["result"]["content"]["body"],
        "fox fox fox"
    );
    let (_, both) = s
        .post(
            "/_matrix/client/v3/search",
            Some(&bob.token),
            query("quick fox", "rank"),
        )
        .await;
    assert_eq!(both["search_categories"]["room_events"]["count"], 1);
    let (_, alices) = s
        .post(
            "/_matrix/client/v3/search",
            Some(&alice.token),
            query("fox", "rank"),
        )
        .await;
    assert_eq!(
        alices["search_categories"]["room_events"]["count"], 4,
        "name events count too: {alices}"
    );

    let (_, page) = s
        .post("/_matrix/client/v3/search", Some(&bob.token), json!({ "search_categories": { "room_events": { "search_term": "fox", "filter": { "limit": 1 } } } }))
        .await;
    let next = page["search_categories"]["room_events"]["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, page2) = s
        .post(&format!("/_matrix/client/v3/search?next_batch={next}"), Some(&bob.token), json!({ "search_categories": { "room_events": { "search_term": "fox", "filter": { "limit": 1 } } } }))
        .await;
    assert_eq!(
        page2["search_categories"]["room_events"]["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_ne!(
        page["search_categories"]["room_events"]["results"][0]["result"]["event_id"],
        page2["search_categories"]["room_events"]["results"][0]["result"]["event_id"]
    );
}

#[tokio::test]
async fn timestamp_to_event_reports_and_summary() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let first = s.send_ok(&alice, &room, "first").await;
    let (_, event) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{first}"),
            Some(&alice.token),
        )
        .await;
    let ts = event["origin_server_ts"].as_u64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = s.send_ok(&alice, &room, "second").await;
    let (status, found) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], first.as_str());
    let (_, found) = s
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=b",
                ts + 10_000
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(found["event_id"], second.as_str());
    assert_error(
        &s.get(
            &format!(
                "/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=f",
                ts + 100_000
            ),
            Some(&bob.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{first}"),
            Some(&bob.token),
            json!({ "reason": "spam" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            Some(&bob.token),
            json!({ "reason": "bad room" })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.post(
            "/_matrix/client/v3/users/@alice:localhost/report",
            Some(&bob.token),
            json!({ "reason": "rude" })
        )
        .await
        .0,
        200
    );
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/report/$nope"),
            Some(&bob.token),
            json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(
            "/_matrix/client/v3/users/@ghost:localhost/report",
            Some(&bob.token),
            json!({ "reason": "x" }),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
        Some(&alice.token),
        json!({ "name": "Summary room" }),
    )
    .await;
    let (status, summary) = s
        .get(
            &format!("/_matrix/client/v1/room_summary/{room}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["name"], "Summary room");
    assert_eq!(summary["num_joined_members"], 2);
    assert_eq!(summary["join_rule"], "public");
    assert_eq!(summary["membership"], "join");
    let (status, _) = s
        .get(
            &format!("/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let private = s.create_room(&alice, json!({})).await;
    assert_error(
        &s.get(
            &format!("/_matrix/client/v1/room_summary/{private}"),
            Some(&bob.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn upgrading_a_room() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
        Some(&alice.token),
        json!({ "name": "Old name" }),
    )
    .await;
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
            Some(&bob.token),
            json!({ "new_version": "11" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
            Some(&alice.token),
            json!({ "new_version": "2" }),
        )
        .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
            Some(&alice.token),
            json!({ "new_version": "11" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap();
    let (_, tombstone) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.tombstone"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(tombstone["replacement_room"], new_room);
    let (_, create) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.create"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(create["predecessor"]["room_id"], room.as_str());
    assert_eq!(create["room_version"], "11");
    let (_, name) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.name"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(name["name"], "Old name");
    // Bob can follow (the join rule carried over) but can no longer talk in the old room.
    assert_eq!(s.join(&bob, new_room).await.0, 200);
    assert_error(
        &s.send_text(&bob, &room, "anyone?").await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn redactions_sent_as_events_obey_the_same_rules() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let alices = s.send_ok(&alice, &room, "mine").await;
    let elsewhere = s
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let secret = s.send_ok(&alice, &elsewhere, "not yours").await;
    let bobs_room = s
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    let redaction = |target: &str| json!({ "redacts": target, "reason": "x" });

    // Without the redact power, bob cannot redact alice's event through /send.
    let denied = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.redaction/r1"),
            Some(&bob.token),
            redaction(&alices),
        )
        .await;
    assert_error(&denied, 403, "M_FORBIDDEN");
    // Nor, as creator of his own room, an event of another room.
    let foreign = s
        .put(
            &format!("/_matrix/client/v3/rooms/{bobs_room}/send/m.room.redaction/r2"),
            Some(&bob.token),
            redaction(&secret),
        )
        .await;
    assert_error(&foreign, 404, "M_NOT_FOUND");
    for (r, event, body) in [(&room, &alices, "mine"), (&elsewhere, &secret, "not yours")] {
        let (status, got) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{r}/event/{event}"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(got["content"]["body"], body, "untouched: {got}");
    }
    // His own event he may redact this way.
    let own = s.send_ok(&bob, &room, "oops").await;
    send(&s, &bob, &room, "m.room.redaction", redaction(&own)).await;
    let (_, got) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{own}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(got["content"], json!({}));
}

#[tokio::test]
async fn relations_do_not_reach_into_other_rooms() {
    let (s, alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let private = s
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let secret = s.send_ok(&alice, &private, "private words").await;
    let bobs_room = s
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    let thread = json!({
        "msgtype": "m.text",
        "body": "peek",
        "m.relates_to": { "rel_type": "m.thread", "event_id": secret },
    });
    send(&s, &bob, &bobs_room, "m.room.message", thread).await;
    let edit = json!({
        "msgtype": "m.text",
        "body": "* forged",
        "m.new_content": { "msgtype": "m.text", "body": "forged" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": secret },
    });
    send(&s, &bob, &bobs_room, "m.room.message", edit).await;

    let (status, threads) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{bobs_room}/threads"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        threads["chunk"],
        json!([]),
        "no foreign thread roots: {threads}"
    );
    let (_, got) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{private}/event/{secret}"),
            Some(&alice.token),
        )
        .await;
    assert!(
        got["unsigned"]["m.relations"].is_null(),
        "no foreign bundle: {got}"
    );
    let (_, related) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{private}/relations/{secret}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(related["chunk"], json!([]));
}
