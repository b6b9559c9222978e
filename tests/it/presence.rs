//! Presence: set by syncing or explicitly, idle and offline transitions,
//! visibility, persistence.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

fn presence_of(resp: &Value, user: &str) -> Option<Value> {
    resp["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["sender"] == user)
        .map(|e| e["content"].clone())
}

#[tokio::test]
async fn online_then_unavailable_then_offline() {
    let s = TestServer::start_with(|c| {
        c.presence.idle_timeout_ms = 1_000;
        c.presence.offline_timeout_ms = 2_000;
    })
    .await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let token = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    sync(&s, &bob, "").await; // syncing makes bob online
    let path = "/_matrix/client/v3/presence/@bob:localhost/status";
    let (status, now) = s.get(path, Some(&alice.token)).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["presence"], "online");
    assert_eq!(now["currently_active"], true);
    let resp = sync(&s, &alice, &format!("since={token}")).await;
    assert_eq!(
        presence_of(&resp, "@bob:localhost").unwrap()["presence"],
        "online"
    );
    let token = resp["next_batch"].as_str().unwrap().to_owned();

    // Idle for longer than idle_timeout_ms: unavailable; then, with no sync for
    // longer than offline_timeout_ms: offline. Alice's long-polls hear both.
    // (Her own presence may flap too: her polls outlast the 1 s idle time.)
    let mut token = token;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.last().map(String::as_str) != Some("offline") && std::time::Instant::now() < deadline
    {
        let resp = sync(&s, &alice, &format!("since={token}&timeout=5000")).await;
        if let Some(content) = presence_of(&resp, "@bob:localhost") {
            if content["presence"] == "unavailable" {
                assert!(
                    content["last_active_ago"].as_u64().unwrap() >= 1_000,
                    "{content}"
                );
            }
            seen.push(content["presence"].as_str().unwrap().to_owned());
        }
        token = resp["next_batch"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, vec!["unavailable", "offline"]);
    assert_eq!(
        s.get(path, Some(&alice.token)).await.1["presence"],
        "offline"
    );
}

#[tokio::test]
async fn explicit_status_visibility_and_persistence() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let eve = s.register("eve").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let path = "/_matrix/client/v3/presence/@bob:localhost/status";
    let (status, _) = s
        .put(
            path,
            Some(&bob.token),
            json!({ "presence": "unavailable", "status_msg": "in a meeting" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = s.get(path, Some(&alice.token)).await;
    assert_eq!(got["presence"], "unavailable");
    assert_eq!(got["status_msg"], "in a meeting");
    assert_error(&s.get(path, Some(&eve.token)).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.put(path, Some(&alice.token), json!({ "presence": "online" }))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.put(
            "/_matrix/client/v3/presence/@alice:localhost/status",
            Some(&alice.token),
            json!({ "presence": "dancing" }),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(
            "/_matrix/client/v3/presence/@ghost:localhost/status",
            Some(&alice.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // Eve shares no room with bob: his presence is not in her sync.
    let eves = sync(&s, &eve, "").await;
    assert!(presence_of(&eves, "@bob:localhost").is_none());

    s.restart().await;
    let (_, got) = s.get(path, Some(&alice.token)).await;
    assert_eq!(got["status_msg"], "in a meeting", "kept across a restart");
    assert!(got["last_active_ago"].as_u64().is_some());
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn the_presence_filter_applies() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    sync(&s, &bob, "").await;
    let all = sync(&s, &alice, "").await;
    assert!(presence_of(&all, "@bob:localhost").is_some());
    let filter = json!({ "presence": { "not_senders": ["@bob:localhost"] } }).to_string();
    let encoded: String = filter.bytes().map(|b| format!("%{b:02X}")).collect();
    let filtered = sync(&s, &alice, &format!("filter={encoded}")).await;
    assert!(
        presence_of(&filtered, "@bob:localhost").is_none(),
        "{filtered}"
    );
    let none = json!({ "presence": { "types": [] } }).to_string();
    let encoded: String = none.bytes().map(|b| format!("%{b:02X}")).collect();
    let empty = sync(&s, &alice, &format!("filter={encoded}")).await;
    assert!(empty["presence"]["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_long_poll_longer_than_the_offline_timeout_keeps_the_user_online() {
    let s = TestServer::start_with(|c| c.presence.offline_timeout_ms = 2_000).await;
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
    let url = format!(
        "{}/_matrix/client/v3/sync?since={token}&timeout=6000",
        s.base
    );
    let poll = tokio::spawn(s.http.get(url).bearer_auth(&bob.token).send());
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let path = "/_matrix/client/v3/presence/@bob:localhost/status";
    let (status, now) = s.get(path, Some(&alice.token)).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["presence"], "online", "still in a poll: {now}");
    assert!(poll.await.unwrap().unwrap().status().is_success());
}
