//! End-to-end encryption plumbing: device keys, one-time and fallback keys,
//! cross-signing, signatures, device lists in sync, key backup, dehydrated
//! devices and encrypted to-device messages.

use std::{collections::BTreeSet, time::Duration};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::common::*;

const KEYS: &str = "/_matrix/client/v3/keys";

/// An ed25519 key pair, as clients hold for devices and cross-signing.
pub(crate) struct Key {
    pair: Ed25519KeyPair,
    public: String,
}

pub(crate) fn key() -> Key {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = b64(pair.public_key().as_ref());
    Key { pair, public }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Adds `user`'s signature with `key_id` to `object`.
fn sign(object: &mut Value, user: &str, key_id: &str, key: &Key) {
    let map = object.as_object().unwrap().clone();
    let canonical = ruma::canonical_json::try_from_json_map(map).unwrap();
    let content = ruma::signatures::to_canonical_json_string_for_signing(&canonical).unwrap();
    let signature = b64(key.pair.sign(content.as_bytes()).as_ref());
    let signatures = object
        .as_object_mut()
        .unwrap()
        .entry("signatures")
        .or_insert_with(|| json!({}));
    let by_user = signatures
        .as_object_mut()
        .unwrap()
        .entry(user)
        .or_insert_with(|| json!({}));
    by_user[key_id] = json!(signature);
}

/// Self-signed device keys of `who`'s device.
pub(crate) fn device_keys(who: &Session, ed: &Key) -> Value {
    let device = &who.device_id;
    let mut keys = json!({
        "user_id": who.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): key().public,
            format!("ed25519:{device}"): ed.public,
        },
    });
    sign(&mut keys, &who.user_id, &format!("ed25519:{device}"), ed);
    keys
}

fn one_time_key(who: &Session, ed: &Key, fallback: bool) -> Value {
    let mut k = json!({ "key": key().public });
    if fallback {
        k["fallback"] = json!(true);
    }
    sign(
        &mut k,
        &who.user_id,
        &format!("ed25519:{}", who.device_id),
        ed,
    );
    k
}

pub(crate) fn one_time_keys(
    who: &Session,
    ed: &Key,
    ids: impl IntoIterator<Item = String>,
) -> Value {
    let mut keys = serde_json::Map::new();
    for id in ids {
        keys.insert(
            format!("signed_curve25519:{id}"),
            one_time_key(who, ed, false),
        );
    }
    Value::Object(keys)
}

async fn upload(s: &TestServer, who: &Session, body: Value) -> Value {
    let (status, resp) = s
        .post(&format!("{KEYS}/upload"), Some(&who.token), body)
        .await;
    assert_eq!(status, 200, "{resp}");
    resp
}

async fn query(s: &TestServer, who: &Session, users: &[&str]) -> Value {
    let wanted: serde_json::Map<String, Value> =
        users.iter().map(|u| (u.to_string(), json!([]))).collect();
    let (status, resp) = s
        .post(
            &format!("{KEYS}/query"),
            Some(&who.token),
            json!({ "device_keys": wanted }),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    resp
}

async fn claim(s: &TestServer, who: &Session, user: &str, device: &str) -> (u16, Value) {
    let (status, resp) = s
        .post(
            &format!("{KEYS}/claim"),
            Some(&who.token),
            json!({ "one_time_keys": { user: { device: "signed_curve25519" } } }),
        )
        .await;
    (status.as_u16(), resp)
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

fn listed(body: &Value, list: &str, user: &str) -> bool {
    body["device_lists"][list]
        .as_array()
        .is_some_and(|a| a.iter().any(|u| u == user))
}

#[tokio::test]
async fn upload_query_counts_and_sync_counts() {
    let (s, alice, bob, _room) = alice_and_bob_in_a_public_room().await;
    let ed = key();
    let keys = device_keys(&alice, &ed);
    let resp = upload(
        &s,
        &alice,
        json!({
            "device_keys": keys,
            "one_time_keys": one_time_keys(&alice, &ed, ["A1".into(), "A2".into(), "A3".into()]),
            "fallback_keys": { "signed_curve25519:F1": one_time_key(&alice, &ed, true) },
        }),
    )
    .await;
    assert_eq!(
        resp["one_time_key_counts"]["signed_curve25519"], 3,
        "{resp}"
    );

    // Bob sees alice's device as she signed it, with its display name.
    let found = query(&s, &bob, &[&alice.user_id, "@nobody:localhost"]).await;
    let device = &found["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"], keys["keys"], "{found}");
    assert_eq!(device["signatures"], keys["signatures"]);
    assert!(device["unsigned"].is_object(), "{device}");
    assert_eq!(found["device_keys"]["@nobody:localhost"], json!({}));
    // Asking for one device by id; other devices are left out.
    let (_, only) = s
        .post(
            &format!("{KEYS}/query"),
            Some(&bob.token),
            json!({ "device_keys": { &alice.user_id: ["NOTADEVICE"] } }),
        )
        .await;
    assert_eq!(only["device_keys"][&alice.user_id], json!({}), "{only}");

    // Her sync reports the counts and the unused fallback key.
    let body = sync(&s, &alice, "timeout=0").await;
    assert_eq!(body["device_one_time_keys_count"]["signed_curve25519"], 3);
    assert_eq!(
        body["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Uploading the same device keys again changes nothing and is fine.
    upload(&s, &alice, json!({ "device_keys": keys })).await;
}

#[tokio::test]
async fn bad_uploads_are_refused_with_spec_errors() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let ed = key();
    let path = format!("{KEYS}/upload");
    let token = Some(alice.token.as_str());

    // Someone else's user id, or another device's id.
    let mut other_user = device_keys(&alice, &ed);
    other_user["user_id"] = json!("@mallory:localhost");
    assert_error(
        &s.post(&path, token, json!({ "device_keys": other_user }))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    let mut other_device = device_keys(&alice, &ed);
    other_device["device_id"] = json!("OTHERDEVICE");
    assert_error(
        &s.post(&path, token, json!({ "device_keys": other_device }))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // Keys that are not a map of strings.
    let mut bad_shape = device_keys(&alice, &ed);
    bad_shape["keys"] = json!(["not", "a", "map"]);
    assert_error(
        &s.post(&path, token, json!({ "device_keys": bad_shape }))
            .await,
        400,
        "M_BAD_JSON",
    );
    // Without the device's own signature.
    let mut unsigned = device_keys(&alice, &ed);
    unsigned["signatures"] = json!({});
    assert_error(
        &s.post(&path, token, json!({ "device_keys": unsigned }))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // A one-time key id without an algorithm, a signed key that is a string.
    let (status, body) = s
        .post(
            &path,
            token,
            json!({ "one_time_keys": { "nocolon": one_time_key(&alice, &ed, false) } }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        ["M_BAD_JSON", "M_INVALID_PARAM"].contains(&body["errcode"].as_str().unwrap()),
        "{body}"
    );
    assert_error(
        &s.post(
            &path,
            token,
            json!({ "one_time_keys": { "signed_curve25519:X": "just a string" } }),
        )
        .await,
        400,
        "M_BAD_JSON",
    );

    // Identity keys, once set, cannot change.
    upload(
        &s,
        &alice,
        json!({ "device_keys": device_keys(&alice, &ed) }),
    )
    .await;
    assert_error(
        &s.post(
            &path,
            token,
            json!({ "device_keys": device_keys(&alice, &key()) }),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // A one-time key id reused with another key.
    upload(
        &s,
        &alice,
        json!({ "one_time_keys": one_time_keys(&alice, &ed, ["K".into()]) }),
    )
    .await;
    assert_error(
        &s.post(
            &path,
            token,
            json!({ "one_time_keys": one_time_keys(&alice, &ed, ["K".into()]) }),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // Nothing was half-stored: still exactly one key.
    let resp = upload(&s, &alice, json!({})).await;
    assert_eq!(resp["one_time_key_counts"]["signed_curve25519"], 1);
}

#[tokio::test]
async fn claims_hand_out_each_key_once_then_the_fallback_key() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let ed = key();
    upload(
        &s,
        &alice,
        json!({
            "device_keys": device_keys(&alice, &ed),
            "one_time_keys": one_time_keys(&alice, &ed, (0..20).map(|i| format!("K{i:02}"))),
            "fallback_keys": { "signed_curve25519:FB": one_time_key(&alice, &ed, true) },
        }),
    )
    .await;

    // Unknown users and devices: an empty answer, not an error.
    let (status, resp) = claim(&s, &bob, "@nobody:localhost", "NODEVICE").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["one_time_keys"], json!({}));
    let (status, resp) = claim(&s, &bob, &alice.user_id, "NODEVICE").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["one_time_keys"], json!({}));

    // 30 concurrent claims for 20 keys: every key once, then the fallback key.
    let claims = (0..30).map(|_| claim(&s, &bob, &alice.user_id, &alice.device_id));
    let results = futures_util::future::join_all(claims).await;
    let mut handed_out = Vec::new();
    for (status, resp) in results {
        assert_eq!(status, 200, "{resp}");
        let keys = resp["one_time_keys"][&alice.user_id][&alice.device_id]
            .as_object()
            .unwrap_or_else(|| panic!("a key for every claim: {resp}"));
        assert_eq!(keys.len(), 1, "{resp}");
        handed_out.push(keys.keys().next().unwrap().clone());
    }
    let one_time: Vec<_> = handed_out
        .iter()
        .filter(|id| *id != "signed_curve25519:FB")
        .collect();
    let distinct: BTreeSet<_> = one_time.iter().collect();
    assert_eq!(one_time.len(), 20, "{handed_out:?}");
    assert_eq!(
        distinct.len(),
        20,
        "a key was handed out twice: {handed_out:?}"
    );
    assert_eq!(handed_out.len() - one_time.len(), 10);

    // No one-time keys left, and the fallback key is used.
    let body = sync(&s, &alice, "timeout=0").await;
    assert_eq!(body["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(body["device_unused_fallback_key_types"], json!([]));
    // A new fallback key is unused again.
    upload(
        &s,
        &alice,
        json!({ "fallback_keys": { "signed_curve25519:FB2": one_time_key(&alice, &ed, true) } }),
    )
    .await;
    let body = sync(&s, &alice, "timeout=0").await;
    assert_eq!(
        body["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
}

#[tokio::test]
async fn device_lists_report_key_changes_joins_and_leaves() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let carol = s.register("carol").await;
    let since = next_batch(&sync(&s, &bob, "timeout=0").await);

    // A long-polling sync wakes when alice uploads device keys.
    let waiting = {
        let base = s.base.clone();
        let token = bob.token.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body: Value = reqwest::Client::new()
                .get(format!(
                    "{base}/_matrix/client/v3/sync?timeout=20000&since={since}"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    upload(
        &s,
        &alice,
        json!({ "device_keys": device_keys(&alice, &key()) }),
    )
    .await;
    let (waited, body) = waiting.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "the sync slept on: {waited:?}"
    );
    assert!(listed(&body, "changed", &alice.user_id), "{body}");

    // Carol shares no room with bob: her key changes are not his business.
    let since = next_batch(&body);
    upload(
        &s,
        &carol,
        json!({ "device_keys": device_keys(&carol, &key()) }),
    )
    .await;
    let body = sync(&s, &bob, &format!("timeout=0&since={since}")).await;
    assert!(!listed(&body, "changed", &carol.user_id), "{body}");

    // Carol joins: bob should fetch her devices.
    s.join(&carol, &room).await;
    let body = sync(&s, &bob, &format!("timeout=0&since={since}")).await;
    assert!(listed(&body, "changed", &carol.user_id), "{body}");

    // /keys/changes agrees over the same range.
    let to = next_batch(&body);
    let (status, changes) = s
        .get(
            &format!("{KEYS}/changes?from={since}&to={to}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{changes}");
    assert!(
        changes["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == carol.user_id.as_str()),
        "{changes}"
    );
    assert_error(
        &s.get(
            &format!("{KEYS}/changes?from=garbage&to={to}"),
            Some(&bob.token),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // Carol leaves: bob shares no room with her any more.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let body = sync(&s, &bob, &format!("timeout=0&since={to}")).await;
    assert!(listed(&body, "left", &carol.user_id), "{body}");

    // Logging a device out is a change of the owner's device list.
    let since = next_batch(&body);
    let alice2 = s.login_ok("alice").await;
    upload(
        &s,
        &alice2,
        json!({ "device_keys": device_keys(&alice2, &key()) }),
    )
    .await;
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(found["device_keys"][&alice.user_id][&alice2.device_id].is_object());
    let (status, _) = s
        .post("/_matrix/client/v3/logout", Some(&alice2.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let body = sync(&s, &bob, &format!("timeout=0&since={since}")).await;
    assert!(listed(&body, "changed", &alice.user_id), "{body}");
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(
        found["device_keys"][&alice.user_id]
            .get(&alice2.device_id)
            .is_none(),
        "a logged-out device's keys are gone: {found}"
    );

    // Bob leaves the only room he shares with alice: she is left.
    let since = next_batch(&body);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let body = sync(&s, &bob, &format!("timeout=0&since={since}")).await;
    assert!(listed(&body, "left", &alice.user_id), "{body}");
    assert!(!listed(&body, "left", &bob.user_id), "{body}");
}

/// Master, self-signing and user-signing keys of `who`, properly signed.
struct CrossSigning {
    master: Key,
    self_signing: Key,
    user_signing: Key,
    body: Value,
}

fn cross_signing(who: &Session) -> CrossSigning {
    let (master, self_signing, user_signing) = (key(), key(), key());
    let user = who.user_id.as_str();
    let signing_key = |usage: &str, k: &Key| {
        json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{}", k.public): k.public },
        })
    };
    let master_json = signing_key("master", &master);
    let mut ssk = signing_key("self_signing", &self_signing);
    sign(
        &mut ssk,
        user,
        &format!("ed25519:{}", master.public),
        &master,
    );
    let mut usk = signing_key("user_signing", &user_signing);
    sign(
        &mut usk,
        user,
        &format!("ed25519:{}", master.public),
        &master,
    );
    CrossSigning {
        body: json!({ "master_key": master_json, "self_signing_key": ssk, "user_signing_key": usk }),
        master,
        self_signing,
        user_signing,
    }
}

#[tokio::test]
async fn cross_signing_keys_need_auth_to_replace_and_show_to_the_right_users() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let path = format!("{KEYS}/device_signing/upload");

    // A self-signing key that the master key did not sign is refused.
    let mut bad = cross_signing(&alice);
    bad.body["self_signing_key"]["signatures"] = json!({});
    assert_error(
        &s.post(&path, Some(&alice.token), bad.body).await,
        400,
        "M_INVALID_PARAM",
    );
    // Keys for someone else are refused.
    let other = cross_signing(&bob);
    assert_error(
        &s.post(&path, Some(&alice.token), other.body).await,
        400,
        "M_INVALID_PARAM",
    );

    // The first upload needs no UIA.
    let first = cross_signing(&alice);
    let (status, body) = s.post(&path, Some(&alice.token), first.body.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The same keys again: nothing changes, no UIA.
    let (status, body) = s.post(&path, Some(&alice.token), first.body.clone()).await;
    assert_eq!(status, 200, "{body}");

    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(
        found["master_keys"][&alice.user_id]["keys"],
        first.body["master_key"]["keys"]
    );
    assert_eq!(
        found["self_signing_keys"][&alice.user_id]["keys"],
        first.body["self_signing_key"]["keys"]
    );
    assert!(
        found["user_signing_keys"].get(&alice.user_id).is_none(),
        "{found}"
    );
    let mine = query(&s, &alice, &[&alice.user_id]).await;
    assert_eq!(
        mine["user_signing_keys"][&alice.user_id]["keys"],
        first.body["user_signing_key"]["keys"]
    );

    // Replacing the master key needs UIA, every time.
    let second = cross_signing(&alice);
    let (status, body) = s.post(&path, Some(&alice.token), second.body.clone()).await;
    assert_eq!(status, 401, "{body}");
    let session = body["session"].as_str().unwrap().to_owned();
    assert_eq!(body["flows"][0]["stages"][0], "m.login.password");
    let mut with_auth = second.body.clone();
    with_auth["auth"] = password_auth(&alice.user_id, Some(&session));
    let (status, body) = s.post(&path, Some(&alice.token), with_auth).await;
    assert_eq!(status, 200, "{body}");
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(
        found["master_keys"][&alice.user_id]["keys"],
        second.body["master_key"]["keys"]
    );
    let third = cross_signing(&alice);
    let (status, _) = s.post(&path, Some(&alice.token), third.body).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn signatures_are_verified_stored_and_shown_to_the_right_users() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let ed = key();
    let alice_device = device_keys(&alice, &ed);
    upload(&s, &alice, json!({ "device_keys": alice_device.clone() })).await;
    let alice_cs = cross_signing(&alice);
    let bob_cs = cross_signing(&bob);
    for (who, cs) in [(&alice, &alice_cs), (&bob, &bob_cs)] {
        let (status, body) = s
            .post(
                &format!("{KEYS}/device_signing/upload"),
                Some(&who.token),
                cs.body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let path = format!("{KEYS}/signatures/upload");

    // Alice signs her device with her self-signing key.
    let ssk_id = format!("ed25519:{}", alice_cs.self_signing.public);
    let mut signed_device = alice_device.clone();
    signed_device.as_object_mut().unwrap().remove("signatures");
    sign(
        &mut signed_device,
        &alice.user_id,
        &ssk_id,
        &alice_cs.self_signing,
    );
    // A forged one (signed by another key) for a key id that does not exist.
    let mut forged = alice_device.clone();
    forged.as_object_mut().unwrap().remove("signatures");
    sign(&mut forged, &alice.user_id, &ssk_id, &key());
    let (status, body) = s
        .post(
            &path,
            Some(&alice.token),
            json!({ &alice.user_id: { &alice.device_id: forged } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{body}"
    );
    let (status, body) = s
        .post(
            &path,
            Some(&alice.token),
            json!({ &alice.user_id: { &alice.device_id: signed_device, "NOSUCHDEVICE": {"signatures": {&alice.user_id: {"ed25519:x": "y"}}} } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["failures"][&alice.user_id]
            .get(&alice.device_id)
            .is_none(),
        "{body}"
    );
    assert!(
        body["failures"][&alice.user_id]["NOSUCHDEVICE"]["errcode"].is_string(),
        "{body}"
    );
    let found = query(&s, &bob, &[&alice.user_id]).await;
    let device = &found["device_keys"][&alice.user_id][&alice.device_id];
    assert!(
        device["signatures"][&alice.user_id][&ssk_id].is_string(),
        "{device}"
    );
    assert!(
        device["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)].is_string(),
        "the device's own signature stays: {device}"
    );

    // Alice signs bob's master key with her user-signing key: only she sees it.
    let bob_master_id = bob_cs.master.public.clone();
    let mut bob_master = bob_cs.body["master_key"].clone();
    let usk_id = format!("ed25519:{}", alice_cs.user_signing.public);
    sign(
        &mut bob_master,
        &alice.user_id,
        &usk_id,
        &alice_cs.user_signing,
    );
    let (status, body) = s
        .post(
            &path,
            Some(&alice.token),
            json!({ &bob.user_id: { &bob_master_id: bob_master } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("failures").is_none_or(|f| f == &json!({})),
        "{body}"
    );
    let seen_by_alice = query(&s, &alice, &[&bob.user_id]).await;
    assert!(
        seen_by_alice["master_keys"][&bob.user_id]["signatures"][&alice.user_id][&usk_id]
            .is_string(),
        "{seen_by_alice}"
    );
    let seen_by_bob = query(&s, &bob, &[&bob.user_id]).await;
    assert!(
        seen_by_bob["master_keys"][&bob.user_id]["signatures"]
            .get(&alice.user_id)
            .is_none(),
        "{seen_by_bob}"
    );
    let _ = (&alice_cs.master, &bob_cs.self_signing, &bob_cs.user_signing);
}

fn backup_key(first_message_index: u64, forwarded_count: u64, verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": verified,
        "session_data": { "ephemeral": "ZXBo", "ciphertext": b64(tag.as_bytes()), "mac": "bWFj" },
    })
}

#[tokio::test]
async fn key_backup_versions_keys_etags_and_replacement_rules() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let t = Some(alice.token.as_str());
    let v3 = "/_matrix/client/v3/room_keys";
    assert_error(
        &s.get(&format!("{v3}/version"), t).await,
        404,
        "M_NOT_FOUND",
    );
    let algorithm = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": "cHVibGlj", "signatures": {} },
    });
    assert_error(
        &s.post(&format!("{v3}/version"), t, json!({ "algorithm": 5 }))
            .await,
        400,
        "M_BAD_JSON",
    );
    let (status, body) = s.post(&format!("{v3}/version"), t, algorithm.clone()).await;
    assert_eq!(status, 200, "{body}");
    let version = body["version"].as_str().unwrap().to_owned();
    let (_, info) = s.get(&format!("{v3}/version"), t).await;
    assert_eq!(info["version"], version.as_str());
    assert_eq!(info["count"], 0);
    assert_eq!(info["auth_data"], algorithm["auth_data"]);
    let etag0 = info["etag"].as_str().unwrap().to_owned();

    let room = "!room:localhost";
    let keys = |v: &str| format!("{v3}/keys?version={v}");
    let room_keys = |v: &str| format!("{v3}/keys/{}?version={v}", urlencode(room));
    let session_key =
        |v: &str, sid: &str| format!("{v3}/keys/{}/{sid}?version={v}", urlencode(room));

    // All three levels of upload.
    let (status, body) = s
        .put(
            &keys(&version),
            t,
            json!({ "rooms": { room: { "sessions": { "S1": backup_key(5, 1, false, "s1v1") } } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    let etag1 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag0, etag1);
    let (status, body) = s
        .put(
            &room_keys(&version),
            t,
            json!({ "sessions": { "S2": backup_key(0, 0, false, "s2v1") } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    let (status, body) = s
        .put(
            &session_key(&version, "S3"),
            t,
            backup_key(0, 0, true, "s3v1"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 3);
    let etag3 = body["etag"].as_str().unwrap().to_owned();

    // Worse keys do not replace better ones; the etag stays.
    for worse in [
        backup_key(6, 0, false, "later index"),
        backup_key(5, 2, false, "more forwards"),
    ] {
        let (_, body) = s.put(&session_key(&version, "S1"), t, worse).await;
        assert_eq!(body["etag"], etag3.as_str(), "{body}");
    }
    let (_, body) = s
        .put(
            &session_key(&version, "S3"),
            t,
            backup_key(0, 0, false, "unverified"),
        )
        .await;
    assert_eq!(body["etag"], etag3.as_str());
    let (_, got) = s.get(&session_key(&version, "S1"), t).await;
    assert_eq!(got["session_data"]["ciphertext"], b64(b"s1v1"), "{got}");
    // Better ones do.
    s.put(
        &session_key(&version, "S1"),
        t,
        backup_key(5, 1, true, "verified"),
    )
    .await;
    let (_, got) = s.get(&session_key(&version, "S1"), t).await;
    assert_eq!(got["session_data"]["ciphertext"], b64(b"verified"));
    s.put(
        &session_key(&version, "S2"),
        t,
        backup_key(0, 0, true, "s2 verified"),
    )
    .await;
    let (_, body) = s
        .put(
            &session_key(&version, "S1"),
            t,
            backup_key(1, 0, true, "earlier"),
        )
        .await;
    assert_eq!(body["count"], 3);
    assert_ne!(body["etag"], etag3.as_str());

    // Reading at the three levels.
    let (_, all) = s.get(&keys(&version), t).await;
    assert_eq!(all["rooms"][room]["sessions"].as_object().unwrap().len(), 3);
    assert_eq!(
        all["rooms"][room]["sessions"]["S1"]["session_data"]["ciphertext"],
        b64(b"earlier")
    );
    let (_, in_room) = s.get(&room_keys(&version), t).await;
    assert_eq!(in_room["sessions"].as_object().unwrap().len(), 3);
    assert_error(
        &s.get(&session_key(&version, "NOPE"), t).await,
        404,
        "M_NOT_FOUND",
    );

    // Updating: auth_data may change, the algorithm may not.
    let mut updated = algorithm.clone();
    updated["auth_data"]["public_key"] = json!("bmV3");
    updated["version"] = json!(version);
    let (status, body) = s.put(&format!("{v3}/version/{version}"), t, updated).await;
    assert_eq!(status, 200, "{body}");
    let (_, info) = s.get(&format!("{v3}/version/{version}"), t).await;
    assert_eq!(info["auth_data"]["public_key"], "bmV3");
    assert_eq!(info["count"], 3);
    let mut other_algorithm = algorithm.clone();
    other_algorithm["algorithm"] = json!("org.example.other");
    assert_error(
        &s.put(&format!("{v3}/version/{version}"), t, other_algorithm)
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&format!("{v3}/version/999"), t, algorithm.clone())
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Deleting at the three levels.
    let (_, body) = s.delete(&session_key(&version, "S3"), t, None).await;
    assert_eq!(body["count"], 2, "{body}");
    let (_, body) = s.delete(&room_keys(&version), t, None).await;
    assert_eq!(body["count"], 0, "{body}");
    s.put(
        &session_key(&version, "S9"),
        t,
        backup_key(0, 0, false, "x"),
    )
    .await;
    let (_, body) = s.delete(&keys(&version), t, None).await;
    assert_eq!(body["count"], 0, "{body}");

    // A newer version makes the old one read-only for uploads.
    let (_, body) = s.post(&format!("{v3}/version"), t, algorithm.clone()).await;
    let newer = body["version"].as_str().unwrap().to_owned();
    assert_ne!(newer, version);
    let wrong = s
        .put(
            &session_key(&version, "S1"),
            t,
            backup_key(0, 0, false, "x"),
        )
        .await;
    assert_error(&wrong, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(wrong.1["current_version"], newer.as_str());
    assert_error(&s.get(&keys("12345"), t).await, 404, "M_NOT_FOUND");

    // Deleting the newest version makes the previous one current.
    let (status, _) = s.delete(&format!("{v3}/version/{newer}"), t, None).await;
    assert_eq!(status, 200);
    let (_, info) = s.get(&format!("{v3}/version"), t).await;
    assert_eq!(info["version"], version.as_str());
    assert_error(
        &s.get(&format!("{v3}/version/{newer}"), t).await,
        404,
        "M_NOT_FOUND",
    );
    // Another user sees none of it.
    let bob = s.register("bob").await;
    assert_error(
        &s.get(&format!("{v3}/version"), Some(&bob.token)).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn encrypted_to_device_messages_pass_through_untouched() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    sync(&s, &bob, "timeout=0").await;
    let content = json!({
        "algorithm": "m.olm.v1.curve25519-aes-sha2",
        "sender_key": "c2VuZGVy",
        "ciphertext": { "Y3VydmU": { "type": 0, "body": "b3BhcXVlIPCfpJA=" } },
        "org.example.extra": [1, 2.5, null, { "nested": true }],
    });
    let (status, body) = s
        .put(
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1",
            Some(&alice.token),
            json!({ "messages": { &bob.user_id: { &bob.device_id: content } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body = sync(&s, &bob, "timeout=0").await;
    let events = body["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "m.room.encrypted");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["content"], content);
}

const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

fn dehydrated_body(who: &Session, device_id: &str, ed: &Key, pickle: &str) -> Value {
    let as_device = Session {
        device_id: device_id.to_owned(),
        ..who.clone()
    };
    json!({
        "device_id": device_id,
        "initial_device_display_name": "Dehydrated device",
        "device_data": { "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": pickle },
        "device_keys": device_keys(&as_device, ed),
        "one_time_keys": one_time_keys(&as_device, ed, ["D1".into()]),
        "fallback_keys": { "signed_curve25519:DF": one_time_key(&as_device, ed, true) },
    })
}

#[tokio::test]
async fn dehydrated_devices_store_keys_and_collect_to_device_messages() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let t = Some(alice.token.as_str());
    assert_error(&s.get(DEHYDRATED, t).await, 404, "M_NOT_FOUND");

    // A device id of one of her real devices is not available.
    let ed = key();
    assert_error(
        &s.put(
            DEHYDRATED,
            t,
            dehydrated_body(&alice, &alice.device_id, &ed, "p"),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    let (status, body) = s
        .put(
            DEHYDRATED,
            t,
            dehydrated_body(&alice, "DEHYDRATED1", &ed, "pickle1"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "DEHYDRATED1");
    let (status, body) = s.get(DEHYDRATED, t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "DEHYDRATED1");
    assert_eq!(body["device_data"]["device_pickle"], "pickle1");

    // Others see it as one of her devices and can claim its keys.
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(
        found["device_keys"][&alice.user_id]["DEHYDRATED1"].is_object(),
        "{found}"
    );
    let (_, claimed) = claim(&s, &bob, &alice.user_id, "DEHYDRATED1").await;
    assert!(
        claimed["one_time_keys"][&alice.user_id]["DEHYDRATED1"]["signed_curve25519:D1"].is_object(),
        "{claimed}"
    );

    // To-device messages for it are read through `events`, in batches.
    for (i, target) in ["DEHYDRATED1", "*"].iter().enumerate() {
        let (status, _) = s
            .put(
                &format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/d{i}"),
                Some(&bob.token),
                json!({ "messages": { &alice.user_id: { *target: { "ciphertext": format!("m{i}") } } } }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let events_path = format!("{DEHYDRATED}/DEHYDRATED1/events");
    let (status, body) = s.post(&events_path, t, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["content"]["ciphertext"], "m0");
    assert_eq!(events[0]["sender"], bob.user_id.as_str());
    let next = body["next_batch"].as_str().unwrap().to_owned();
    let (_, body) = s.post(&events_path, t, json!({ "next_batch": next })).await;
    assert_eq!(body["events"], json!([]), "{body}");
    assert_error(
        &s.post(&format!("{DEHYDRATED}/OTHER/events"), t, json!({}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(&events_path, t, json!({ "next_batch": "garbage" }))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // A new dehydrated device replaces the old one, keys and all.
    let (status, _) = s
        .put(
            DEHYDRATED,
            t,
            dehydrated_body(&alice, "DEHYDRATED2", &key(), "pickle2"),
        )
        .await;
    assert_eq!(status, 200);
    let found = query(&s, &bob, &[&alice.user_id]).await;
    let devices = found["device_keys"][&alice.user_id].as_object().unwrap();
    assert!(
        devices.contains_key("DEHYDRATED2") && !devices.contains_key("DEHYDRATED1"),
        "{found}"
    );
    // Putting the same id again with new keys is allowed (a new dehydration).
    let (status, body) = s
        .put(
            DEHYDRATED,
            t,
            dehydrated_body(&alice, "DEHYDRATED2", &key(), "pickle3"),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = s.delete(DEHYDRATED, t, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "DEHYDRATED2");
    assert_error(&s.get(DEHYDRATED, t).await, 404, "M_NOT_FOUND");
    assert_error(&s.delete(DEHYDRATED, t, None).await, 404, "M_NOT_FOUND");
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(
        found["device_keys"][&alice.user_id]
            .get("DEHYDRATED2")
            .is_none()
    );
}

#[tokio::test]
async fn every_e2ee_endpoint_needs_a_token() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("POST", format!("{KEYS}/upload")),
        ("POST", format!("{KEYS}/query")),
        ("POST", format!("{KEYS}/claim")),
        ("GET", format!("{KEYS}/changes?from=s1_x&to=s2_y")),
        ("POST", format!("{KEYS}/device_signing/upload")),
        ("POST", format!("{KEYS}/signatures/upload")),
        ("GET", "/_matrix/client/v3/room_keys/version".to_owned()),
        (
            "GET",
            "/_matrix/client/v3/room_keys/keys?version=1".to_owned(),
        ),
        ("GET", DEHYDRATED.to_owned()),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != reqwest::Method::GET).then(|| json!({}));
        let got = s.request(method, &path, None, body).await;
        assert_error(&got, 401, "M_MISSING_TOKEN");
    }
}

#[tokio::test]
async fn deactivation_removes_keys_and_versions_advertise_dehydration() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    upload(
        &s,
        &alice,
        json!({ "device_keys": device_keys(&alice, &key()) }),
    )
    .await;
    let (status, _) = s
        .post(
            &format!("{KEYS}/device_signing/upload"),
            Some(&alice.token),
            cross_signing(&alice).body,
        )
        .await;
    assert_eq!(status, 200);
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(found["master_keys"][&alice.user_id].is_object());

    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            json!({ "auth": password_auth(&alice.user_id, None) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(found["device_keys"][&alice.user_id], json!({}), "{found}");
    assert!(
        found["master_keys"].get(&alice.user_id).is_none(),
        "{found}"
    );

    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc3814"], true);
}
