//! Push rules, pushers, `/notifications`, and delivery through the outbox to a
//! real HTTP push gateway on loopback that records what it receives.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode as AxumStatus, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// How the recording gateway answers.
#[derive(Clone, Debug)]
enum Answer {
    Accept,
    Reject(Vec<String>),
}

#[derive(Clone)]
struct GatewayState {
    received: Arc<Mutex<Vec<Value>>>,
    answer: Arc<Mutex<Answer>>,
}

/// A push gateway speaking the Push Gateway API on loopback.
struct Gateway {
    addr: SocketAddr,
    state: GatewayState,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::default())
    }

    /// Starts on `addr` (a gateway coming back), keeping what it received.
    async fn start_on(addr: SocketAddr, received: Arc<Mutex<Vec<Value>>>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, received)
    }

    fn serve(listener: tokio::net::TcpListener, received: Arc<Mutex<Vec<Value>>>) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = GatewayState {
            received,
            answer: Arc::new(Mutex::new(Answer::Accept)),
        };
        let app = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.addr)
    }

    fn received(&self) -> Vec<Value> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` notifications arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the gateway got {} notifications, expected {n}: {:?}",
            self.received().len(),
            self.received()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(
    State(state): State<GatewayState>,
    Json(body): Json<Value>,
) -> (AxumStatus, Json<Value>) {
    state.received.lock().unwrap().push(body);
    let rejected = match &*state.answer.lock().unwrap() {
        Answer::Accept => Vec::new(),
        Answer::Reject(keys) => keys.clone(),
    };
    (AxumStatus::OK, Json(json!({ "rejected": rejected })))
}

async fn quick_retries() -> TestServer {
    TestServer::start_with(|c| {
        c.outbox.retry_initial_ms = 50;
        c.outbox.retry_max_ms = 200;
    })
    .await
}

async fn set_pusher(s: &TestServer, who: &Session, url: &str, pushkey: &str, extra: Value) {
    let mut data = json!({ "url": url, "custom": "kept" });
    if let Value::Object(extra) = extra {
        data.as_object_mut().unwrap().extend(extra);
    }
    let (status, body) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&who.token),
            json!({
                "kind": "http",
                "app_id": "ai.iambig.test",
                "pushkey": pushkey,
                "app_display_name": "BIG",
                "device_display_name": "phone",
                "lang": "en",
                "data": data,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "pushers/set: {body}");
}

/// alice and bob in a DM that alice created and bob joined.
async fn dm(s: &TestServer, alice: &Session, bob: &Session) -> String {
    let room = s
        .create_room(
            alice,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }),
        )
        .await;
    let (status, body) = s.join(bob, &room).await;
    assert_eq!(status, StatusCode::OK, "join: {body}");
    room
}

/// Mutes `room` for `who` the way Element does: a room rule without actions.
async fn mute(s: &TestServer, who: &Session, room: &str) {
    let (status, body) = s
        .put(
            &format!(
                "/_matrix/client/v3/pushrules/global/room/{}",
                urlencode(room)
            ),
            Some(&who.token),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Gives the server time to send anything else it (wrongly) queued.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_dm_message_reaches_the_gateway_once_with_its_fields_and_counts() {
    let s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let gateway = Gateway::start().await;
    set_pusher(&s, &bob, &gateway.url(), "bob-phone", json!({})).await;

    let event = s.send_ok(&alice, &room, "hello bob").await;
    let got = gateway.wait_for(1).await;
    settle().await;
    assert_eq!(gateway.received().len(), 1, "exactly once: {got:?}");
    let n = &got[0]["notification"];
    assert_eq!(n["event_id"], event.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id.as_str());
    assert_eq!(n["sender_display_name"], "alice");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["prio"], "high", "a DM rings");
    assert_eq!(n["counts"]["unread"], 1);
    let device = &n["devices"][0];
    assert_eq!(device["app_id"], "ai.iambig.test");
    assert_eq!(device["pushkey"], "bob-phone");
    assert!(device["pushkey_ts"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(device["data"]["custom"], "kept");
    assert!(device["data"].get("url").is_none(), "the URL stays home");
    assert_eq!(device["tweaks"]["sound"], "default");
}

#[tokio::test]
async fn event_id_only_pushers_get_no_content() {
    let s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let gateway = Gateway::start().await;
    set_pusher(
        &s,
        &bob,
        &gateway.url(),
        "k",
        json!({ "format": "event_id_only" }),
    )
    .await;
    let event = s.send_ok(&alice, &room, "secret text").await;
    let n = gateway.wait_for(1).await[0]["notification"].clone();
    assert_eq!(n["event_id"], event.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["counts"]["unread"], 1);
    for field in [
        "content",
        "sender",
        "sender_display_name",
        "type",
        "room_name",
    ] {
        assert!(n.get(field).is_none(), "{field} must not be sent: {n}");
    }
    assert_eq!(n["devices"][0]["data"]["format"], "event_id_only");
}

#[tokio::test]
async fn muted_rooms_and_edits_do_not_push_but_mentions_highlight() {
    let s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let group = s
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Team" }))
        .await;
    let muted = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    for room in [&group, &muted] {
        s.join(&bob, room).await;
        s.join(&carol, room).await;
    }
    let gateway = Gateway::start().await;
    set_pusher(&s, &bob, &gateway.url(), "k", json!({})).await;
    mute(&s, &bob, &muted).await;

    let plain = s.send_ok(&alice, &group, "hi all").await;
    s.send_ok(&alice, &muted, "nobody hears this").await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{group}/send/m.room.message/edit1"),
            Some(&alice.token),
            json!({
                "msgtype": "m.text", "body": "* hi everyone",
                "m.new_content": { "msgtype": "m.text", "body": "hi everyone" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": plain },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{group}/send/m.room.message/mention1"),
            Some(&carol.token),
            json!({
                "msgtype": "m.text", "body": "bob, look",
                "m.mentions": { "user_ids": [bob.user_id] },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mention = body["event_id"].as_str().unwrap().to_owned();

    let got = gateway.wait_for(2).await;
    settle().await;
    let got_all = gateway.received();
    assert_eq!(
        got_all.len(),
        2,
        "only the plain message and the mention: {got_all:?}"
    );
    let first = &got[0]["notification"];
    assert_eq!(first["event_id"], plain.as_str());
    assert_eq!(first["prio"], "low", "a group message does not ring");
    assert_eq!(first["room_name"], "Team");
    assert!(first["devices"][0]["tweaks"].get("highlight").is_none());
    let second = &got[1]["notification"];
    assert_eq!(second["event_id"], mention.as_str());
    assert_eq!(second["prio"], "high");
    assert_eq!(second["devices"][0]["tweaks"]["highlight"], true);
    assert_eq!(
        second["counts"]["unread"], 1,
        "one room has unread notifications"
    );
}

#[tokio::test]
async fn a_gateway_down_across_a_restart_gets_the_notification_exactly_once() {
    let mut s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    // A port nobody listens on yet.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let url = format!("http://{addr}/_matrix/push/v1/notify");
    set_pusher(&s, &bob, &url, "k", json!({})).await;
    let event = s.send_ok(&alice, &room, "are you there?").await;

    let queue = bigd::outbox::Destination::Pusher {
        user: bob.user_id.as_str().try_into().unwrap(),
        app_id: "ai.iambig.test".into(),
        pushkey: "k".into(),
    };
    // Several attempts fail meanwhile; the item stays queued.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.services().outbox.queued(&queue).unwrap(), 1);

    s.restart().await;
    assert_eq!(s.services().outbox.queued(&queue).unwrap(), 1);
    let gateway = Gateway::start_on(addr, Arc::default()).await;
    let got = gateway.wait_for(1).await;
    settle().await;
    assert_eq!(gateway.received().len(), 1, "exactly once: {got:?}");
    assert_eq!(got[0]["notification"]["event_id"], event.as_str());
    for _ in 0..100 {
        if s.services().outbox.queued(&queue).unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the delivered item is still queued");
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let gateway = Gateway::start().await;
    *gateway.state.answer.lock().unwrap() = Answer::Reject(vec!["stale".into()]);
    set_pusher(&s, &bob, &gateway.url(), "stale", json!({})).await;
    s.send_ok(&alice, &room, "one").await;
    gateway.wait_for(1).await;
    for _ in 0..100 {
        let (_, body) = s.get("/_matrix/client/v3/pushers", Some(&bob.token)).await;
        if body["pushers"].as_array().unwrap().is_empty() {
            s.send_ok(&alice, &room, "two").await;
            settle().await;
            assert_eq!(
                gateway.received().len(),
                1,
                "nothing goes to a removed pusher"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the rejected pusher is still there");
}

#[tokio::test]
async fn reading_sends_a_badge_update() {
    let s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let gateway = Gateway::start().await;
    set_pusher(&s, &bob, &gateway.url(), "k", json!({})).await;
    let event = s.send_ok(&alice, &room, "read me").await;
    gateway.wait_for(1).await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = gateway.wait_for(2).await;
    let badge = &got[1]["notification"];
    assert!(badge.get("event_id").is_none(), "{badge}");
    assert_eq!(badge["counts"]["unread"], 0);
    assert_eq!(badge["devices"][0]["pushkey"], "k");
}

#[tokio::test]
async fn pushers_are_listed_validated_moved_and_removed_on_logout() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let url = "https://push.example/_matrix/push/v1/notify";
    set_pusher(&s, &alice, url, "shared", json!({})).await;
    let (_, body) = s
        .get("/_matrix/client/v3/pushers", Some(&alice.token))
        .await;
    let pushers = body["pushers"].as_array().unwrap();
    assert_eq!(pushers.len(), 1);
    assert_eq!(pushers[0]["pushkey"], "shared");
    assert_eq!(pushers[0]["kind"], "http");
    assert_eq!(pushers[0]["data"]["url"], url);
    assert_eq!(pushers[0]["app_display_name"], "BIG");

    // The same pushkey set by bob without `append` moves to bob.
    set_pusher(&s, &bob, url, "shared", json!({})).await;
    let (_, body) = s
        .get("/_matrix/client/v3/pushers", Some(&alice.token))
        .await;
    assert_eq!(body["pushers"], json!([]));
    let (_, body) = s.get("/_matrix/client/v3/pushers", Some(&bob.token)).await;
    assert_eq!(body["pushers"].as_array().unwrap().len(), 1);

    for (data, why) in [
        (
            json!({ "url": "https://push.example/notify" }),
            "wrong path",
        ),
        (
            json!({ "url": "ftp://push.example/_matrix/push/v1/notify" }),
            "wrong scheme",
        ),
        (json!({ "url": "not a url" }), "not a URL"),
    ] {
        let got = s
            .post(
                "/_matrix/client/v3/pushers/set",
                Some(&bob.token),
                json!({
                    "kind": "http", "app_id": "a", "pushkey": "p",
                    "app_display_name": "A", "device_display_name": "D", "lang": "en",
                    "data": data,
                }),
            )
            .await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{why}: {:?}", got.1);
        assert_eq!(got.1["errcode"], "M_INVALID_PARAM", "{why}");
    }
    let got = s
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&bob.token),
            json!({
                "kind": "email", "app_id": "m.email", "pushkey": "bob@example.org",
                "app_display_name": "A", "device_display_name": "D", "lang": "en",
                "data": {},
            }),
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");

    // kind null deletes.
    set_pusher(&s, &bob, url, "second", json!({})).await;
    let (status, _) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&bob.token),
            json!({ "kind": null, "app_id": "ai.iambig.test", "pushkey": "second" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get("/_matrix/client/v3/pushers", Some(&bob.token)).await;
    assert_eq!(body["pushers"].as_array().unwrap().len(), 1);

    // Logging the device out removes its pushers.
    let (status, _) = s
        .post("/_matrix/client/v3/logout", Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let bob2 = s.login_ok("bob").await;
    let (_, body) = s.get("/_matrix/client/v3/pushers", Some(&bob2.token)).await;
    assert_eq!(body["pushers"], json!([]));
}

fn rule_ids(rules: &Value, kind: &str) -> Vec<String> {
    rules["global"][kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn push_rules_have_the_spec_defaults_and_can_be_changed() {
    let s = TestServer::start().await;
    let bob = s.register("bob").await;
    let (status, rules) = s
        .get("/_matrix/client/v3/pushrules/", Some(&bob.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    let overrides = rule_ids(&rules, "override");
    for id in [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.suppress_edits",
    ] {
        assert!(overrides.contains(&id.to_owned()), "{id} in {overrides:?}");
    }
    let underrides = rule_ids(&rules, "underride");
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
    ] {
        assert!(
            underrides.contains(&id.to_owned()),
            "{id} in {underrides:?}"
        );
    }
    let (_, global) = s
        .get("/_matrix/client/v3/pushrules/global/", Some(&bob.token))
        .await;
    assert_eq!(global["override"], rules["global"]["override"]);

    let base = "/_matrix/client/v3/pushrules/global";
    let rule = |actions: Value| {
        json!({ "actions": actions, "conditions": [
        { "kind": "event_match", "key": "content.body", "pattern": "cake" } ] })
    };
    for id in ["a", "b", "c"] {
        let (status, body) = s
            .put(
                &format!("{base}/override/{id}"),
                Some(&bob.token),
                rule(json!(["notify"])),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Newest first by default; `after=c` moves d behind c, `before=b` puts e ahead of b.
    s.put(
        &format!("{base}/override/d?after=c"),
        Some(&bob.token),
        rule(json!([])),
    )
    .await;
    s.put(
        &format!("{base}/override/e?before=b"),
        Some(&bob.token),
        rule(json!([])),
    )
    .await;
    let (_, rules) = s
        .get("/_matrix/client/v3/pushrules/", Some(&bob.token))
        .await;
    let user_rules: Vec<String> = rule_ids(&rules, "override")
        .into_iter()
        .filter(|id| !id.starts_with('.'))
        .collect();
    assert_eq!(user_rules, ["c", "d", "e", "b", "a"]);

    let (_, got) = s.get(&format!("{base}/override/a"), Some(&bob.token)).await;
    assert_eq!(got["rule_id"], "a");
    assert_eq!(got["default"], false);
    assert_eq!(got["actions"], json!(["notify"]));

    // enabled and actions, on user and server-default rules.
    let (status, _) = s
        .put(
            &format!("{base}/override/.m.rule.master/enabled"),
            Some(&bob.token),
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = s
        .get(
            &format!("{base}/override/.m.rule.master/enabled"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(got, json!({ "enabled": true }));
    let actions = json!(["notify", { "set_tweak": "sound", "value": "ping" }]);
    let (status, _) = s
        .put(
            &format!("{base}/override/a/actions"),
            Some(&bob.token),
            json!({ "actions": actions }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = s
        .get(&format!("{base}/override/a/actions"), Some(&bob.token))
        .await;
    assert_eq!(got["actions"], actions);

    // The change reaches sync as m.push_rules account data.
    let initial = sync(&s, &bob, "").await;
    let pushed = initial["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in sync")
        .clone();
    let master = pushed["content"]["global"]["override"][0].clone();
    assert_eq!(master["rule_id"], ".m.rule.master");
    assert_eq!(master["enabled"], true);

    // Errors.
    let got = s
        .get(&format!("{base}/override/nope"), Some(&bob.token))
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let got = s
        .put(
            &format!("{base}/override/nope/enabled"),
            Some(&bob.token),
            json!({ "enabled": false }),
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let got = s
        .put(
            &format!("{base}/override/f?before=nope"),
            Some(&bob.token),
            rule(json!([])),
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let got = s
        .put(
            &format!("{base}/override/.m.rule.mine"),
            Some(&bob.token),
            rule(json!([])),
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    let got = s
        .put(
            &format!("{base}/override/g?after=.m.rule.master"),
            Some(&bob.token),
            rule(json!([])),
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    let got = s
        .delete(
            &format!("{base}/override/.m.rule.master"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    let got = s
        .delete(&format!("{base}/override/nope"), Some(&bob.token), None)
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let (status, _) = s
        .delete(&format!("{base}/override/a"), Some(&bob.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = s.get(&format!("{base}/override/a"), Some(&bob.token)).await;
    assert_error(&got, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn enabling_the_master_rule_silences_everything() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    s.put(
        "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
        Some(&bob.token),
        json!({ "enabled": true }),
    )
    .await;
    s.send_ok(&alice, &room, "shh").await;
    let (_, body) = s
        .get("/_matrix/client/v3/notifications", Some(&bob.token))
        .await;
    let bodies: Vec<&Value> = body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["event"]["content"]["body"])
        .collect();
    assert!(!bodies.contains(&&json!("shh")), "{body}");
}

#[tokio::test]
async fn notifications_list_pages_highlights_and_read_state() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = dm(&s, &alice, &bob).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(s.send_ok(&alice, &room, &format!("message {i}")).await);
    }
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m1"),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "hey", "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mention = body["event_id"].as_str().unwrap().to_owned();

    let (_, page1) = s
        .get("/_matrix/client/v3/notifications?limit=4", Some(&bob.token))
        .await;
    let list = page1["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(
        list[0]["event"]["event_id"],
        mention.as_str(),
        "newest first"
    );
    assert_eq!(list[0]["room_id"], room.as_str());
    assert_eq!(list[0]["read"], false);
    assert!(list[0]["ts"].as_u64().is_some());
    assert!(
        list[0]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "notify")
    );
    let next = page1["next_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, page2) = s
        .get(
            &format!("/_matrix/client/v3/notifications?limit=4&from={next}"),
            Some(&bob.token),
        )
        .await;
    let rest: Vec<&Value> = page2["notifications"].as_array().unwrap().iter().collect();
    // Two messages, then bob's invite into the DM.
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[1]["event"]["event_id"], sent[0].as_str());
    assert_eq!(rest[2]["event"]["content"]["membership"], "invite");
    assert!(page2.get("next_token").is_none_or(Value::is_null));

    let (_, highlights) = s
        .get(
            "/_matrix/client/v3/notifications?only=highlight",
            Some(&bob.token),
        )
        .await;
    let highlights = highlights["notifications"].as_array().unwrap();
    assert_eq!(highlights.len(), 1);
    assert_eq!(highlights[0]["event"]["event_id"], mention.as_str());

    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", sent[2]),
        Some(&bob.token),
        json!({}),
    )
    .await;
    let (_, all) = s
        .get("/_matrix/client/v3/notifications", Some(&bob.token))
        .await;
    let read: Vec<bool> = all["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    // The invite is read: bob answered it by joining.
    assert_eq!(read, [false, false, false, true, true, true, true]);

    let got = s
        .get(
            "/_matrix/client/v3/notifications?from=bogus",
            Some(&bob.token),
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn an_invite_rings_the_invitee() {
    let s = quick_retries().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let gateway = Gateway::start().await;
    set_pusher(&s, &bob, &gateway.url(), "k", json!({})).await;
    let room = s
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "name": "Secret" }),
        )
        .await;
    let (status, body) = s.invite(&alice, &room, &bob.user_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let n = gateway.wait_for(1).await[0]["notification"].clone();
    assert_eq!(n["type"], "m.room.member");
    assert_eq!(n["membership"], "invite");
    assert_eq!(n["user_is_target"], true);
    assert_eq!(n["room_name"], "Secret");
    assert_eq!(n["prio"], "high");
    assert_eq!(n["devices"][0]["tweaks"]["sound"], "default");
}

/// Members whose rules have the same shape share one evaluation per event,
/// unless the event mentions them: mentions and one member's own rules still
/// give each their own actions.
#[tokio::test]
async fn in_a_group_each_member_gets_their_own_actions() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let mut members = Vec::new();
    for name in ["bob", "carol", "dan", "erin"] {
        let who = s.register(name).await;
        s.join(&who, &room).await;
        members.push(who);
    }
    let (bob, carol, dan, erin) = (&members[0], &members[1], &members[2], &members[3]);
    let rule = json!({ "pattern": "lunch", "actions": ["notify", { "set_tweak": "highlight" }] });
    let (status, body) = s
        .put(
            "/_matrix/client/v3/pushrules/global/content/lunch",
            Some(&dan.token),
            rule,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mention = |who: &Session, txn: &str| {
        let body = json!({ "msgtype": "m.text", "body": "hey", "m.mentions": { "user_ids": [who.user_id] } });
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        (path, body)
    };
    let (path, body) = mention(bob, "m1");
    assert_eq!(s.put(&path, Some(&alice.token), body).await.0, 200);
    s.send_ok(&alice, &room, "lunch time").await;
    let (path, body) = mention(carol, "m2");
    assert_eq!(s.put(&path, Some(&alice.token), body).await.0, 200);

    for (who, highlights) in [(bob, 1), (carol, 1), (dan, 1), (erin, 0)] {
        let view = sync(&s, who, "").await;
        let counts = &view["rooms"]["join"][&room]["unread_notifications"];
        assert_eq!(counts["notification_count"], 3, "{}: {counts}", who.user_id);
        assert_eq!(
            counts["highlight_count"], highlights,
            "{}: {counts}",
            who.user_id
        );
    }
}

/// A room's members' rules and pushers are kept per room between events
/// (`push/profiles.rs`): a pusher set, a rule changed or a member joining
/// after the room has seen messages counts from the next message on.
#[tokio::test]
async fn pusher_rule_and_member_changes_count_from_the_next_message() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room_of(quick_retries().await).await;
    let carol = s.register("carol").await;
    s.send_ok(&alice, &room, "before any pusher").await;

    let gateway = Gateway::start().await;
    set_pusher(&s, &bob, &gateway.url(), "bob-key", json!({})).await;
    let second = s.send_ok(&alice, &room, "after bob's pusher").await;
    let got = gateway.wait_for(1).await;
    assert_eq!(got[0]["notification"]["event_id"], second.as_str());

    mute(&s, &bob, &room).await;
    // Carol's pusher exists before she joins: only the member list changes then.
    set_pusher(&s, &carol, &gateway.url(), "carol-key", json!({})).await;
    s.send_ok(&alice, &room, "bob muted").await;
    settle().await;
    assert_eq!(gateway.received().len(), 1, "bob muted the room");

    s.join(&carol, &room).await;
    let third = s.send_ok(&alice, &room, "carol joined").await;
    gateway.wait_for(2).await;
    settle().await;
    let got = gateway.received();
    assert_eq!(got.len(), 2, "bob muted the room: {got:?}");
    let last = &got[1]["notification"];
    assert_eq!(last["event_id"], third.as_str());
    assert_eq!(last["devices"][0]["pushkey"], "carol-key");
}
