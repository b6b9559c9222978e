//! Contact discovery: phone book upload, the identity lookup endpoints,
//! discoverability, the `ai.iambig.contacts` event and account deletion.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::common::*;

const CONTACTS: &str = "/_matrix/client/unstable/ai.iambig/contacts";

/// Gives `who` the phone number, as the SMS / 3PID code will on verification.
fn set_phone(s: &TestServer, phone: &str, who: &Session) {
    let services = s.services();
    let user = ruma::UserId::parse(&who.user_id).unwrap();
    let mut batch = services.db.batch();
    services
        .contacts
        .on_phone_added(&mut batch, phone, &user)
        .unwrap();
    batch.commit().unwrap();
}

/// The Identity Service v2 sha256 hash, computed as a client does.
fn lookup_hash(phone_digits: &str, pepper: &str) -> String {
    let input = format!("{phone_digits} msisdn {pepper}");
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        input.as_bytes(),
    ))
}

async fn pepper(s: &TestServer, who: &Session) -> String {
    let (status, body) = s
        .get("/_matrix/identity/v2/hash_details", Some(&who.token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["algorithms"]
            .as_array()
            .unwrap()
            .contains(&json!("sha256"))
    );
    body["lookup_pepper"].as_str().unwrap().to_owned()
}

fn matched_users(body: &Value) -> Vec<String> {
    let mut users: Vec<String> = body["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    users
}

#[tokio::test]
async fn upload_returns_exactly_the_registered_numbers_plain_and_hashed() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    set_phone(&s, "+15550000001", &bob);
    set_phone(&s, "+15550000003", &carol);
    let pepper = pepper(&s, &alice).await;

    let (status, body) = s
        .post(
            CONTACTS,
            Some(&alice.token),
            json!({ "contacts": [
                { "phone": "+1 (555) 000-0001", "name": "Bob" },
                { "phone": "+15550000002", "name": "Nobody" },
                { "phone": "555 0003" },
                { "hash": lookup_hash("15550000003", &pepper) },
                { "hash": lookup_hash("15550000009", &pepper) },
            ] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        matched_users(&body),
        vec![bob.user_id.clone(), carol.user_id.clone()]
    );
    let matches = body["matches"].as_array().unwrap();
    let bobs = matches
        .iter()
        .find(|m| m["user_id"] == bob.user_id)
        .unwrap();
    assert_eq!(bobs["phone"], "+15550000001");
    assert_eq!(bobs["displayname"], "bob");
    let carols = matches
        .iter()
        .find(|m| m["user_id"] == carol.user_id)
        .unwrap();
    assert_eq!(carols["hash"], lookup_hash("15550000003", &pepper));
    assert!(carols.get("phone").is_none(), "{carols}");
    // The national number is refused, the others are not.
    assert_eq!(
        body["rejected"],
        json!([{ "index": 2, "reason": "not an international (E.164) phone number" }])
    );

    // The identity lookup answers the same, hashed and plain.
    let hashes = [
        lookup_hash("15550000001", &pepper),
        lookup_hash("15550000002", &pepper),
    ];
    let (status, body) = s
        .post(
            "/_matrix/identity/v2/lookup",
            Some(&alice.token),
            json!({ "algorithm": "sha256", "pepper": pepper, "addresses": hashes }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mappings"], json!({ hashes[0].clone(): bob.user_id }));
    let (status, body) = s
        .post(
            "/_matrix/identity/v2/lookup",
            Some(&alice.token),
            json!({ "algorithm": "none", "pepper": pepper,
                    "addresses": ["15550000003 msisdn", "15550000002 msisdn", "bob@example.org email"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["mappings"],
        json!({ "15550000003 msisdn": carol.user_id })
    );

    // A wrong pepper is refused with the right one; no token, no answer.
    let (status, body) = s
        .post(
            "/_matrix/identity/v2/lookup",
            Some(&alice.token),
            json!({ "algorithm": "sha256", "pepper": "stale", "addresses": hashes }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PEPPER");
    assert_eq!(body["lookup_pepper"], pepper);
    assert_error(
        &s.get("/_matrix/identity/v2/hash_details", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &s.post(CONTACTS, None, json!({ "contacts": [] })).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &s.post(CONTACTS, Some(&alice.token), json!({ "contacts": "no" }))
            .await,
        400,
        "M_BAD_JSON",
    );

    // Listed in /versions.
    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["ai.iambig.contacts"], true);
}

#[tokio::test]
async fn more_than_5000_numbers_is_too_large() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let book = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({ "phone": format!("+4420{:08}", i) }))
            .collect()
    };
    let (status, body) = s
        .post(
            CONTACTS,
            Some(&alice.token),
            json!({ "contacts": book(5000) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &s.post(
            CONTACTS,
            Some(&alice.token),
            json!({ "contacts": book(5001) }),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
}

#[tokio::test]
async fn a_user_who_turned_discovery_off_is_not_found() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    set_phone(&s, "+15550000001", &bob);
    let (status, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/ai.iambig.discovery",
                bob.user_id
            ),
            Some(&bob.token),
            json!({ "discoverable": false }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .post(
            CONTACTS,
            Some(&alice.token),
            json!({ "contacts": [{ "phone": "+15550000001" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matches"], json!([]));
    let pepper = pepper(&s, &alice).await;
    let (_, body) = s
        .post(
            "/_matrix/identity/v2/lookup",
            Some(&alice.token),
            json!({ "algorithm": "sha256", "pepper": pepper,
                    "addresses": [lookup_hash("15550000001", &pepper)] }),
        )
        .await;
    assert_eq!(body["mappings"], json!({}));
}

fn contacts_event(sync: &Value) -> Option<Value> {
    sync["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "ai.iambig.contacts")
        .map(|e| e["content"].clone())
}

#[tokio::test]
async fn the_uploader_hears_when_a_contact_gets_an_account_later() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s
        .post(
            CONTACTS,
            Some(&alice.token),
            json!({ "contacts": [{ "phone": "+44 7700 900123", "name": "Dave" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matches"], json!([]));
    let since = sync(&s, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let dave = s.register("dave").await;
    set_phone(&s, "+447700900123", &dave);
    let resp = sync(&s, &alice, &format!("since={since}&timeout=5000")).await;
    let content = contacts_event(&resp).expect("an ai.iambig.contacts event");
    let arrived = &content["matches"][0];
    assert_eq!(arrived["user_id"], dave.user_id);
    assert_eq!(arrived["phone"], "+447700900123");
    assert_eq!(arrived["name"], "Dave");
    // Dave's own sync does not hear of alice's phone book.
    assert!(contacts_event(&sync(&s, &dave, "").await).is_none());

    // Someone who is not discoverable arrives unannounced; a hashed entry
    // comes back as the hash.
    let pepper = pepper(&s, &alice).await;
    let hash = lookup_hash("15550000005", &pepper);
    s.post(
        CONTACTS,
        Some(&alice.token),
        json!({ "contacts": [{ "phone": "+15550000004" }, { "hash": hash }] }),
    )
    .await;
    let since = next_batch(&resp);
    let erin = s.register("erin").await;
    s.put(
        &format!(
            "/_matrix/client/v3/user/{}/account_data/ai.iambig.discovery",
            erin.user_id
        ),
        Some(&erin.token),
        json!({ "discoverable": false }),
    )
    .await;
    set_phone(&s, "+15550000004", &erin);
    let frank = s.register("frank").await;
    set_phone(&s, "+15550000005", &frank);
    let resp = sync(&s, &alice, &format!("since={since}&timeout=5000")).await;
    let content = contacts_event(&resp).expect("an ai.iambig.contacts event");
    let users: Vec<&Value> = content["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user_id"])
        .collect();
    assert_eq!(users, vec![&json!(dave.user_id), &json!(frank.user_id)]);
    assert_eq!(content["matches"][1]["hash"], hash);
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_phone_book_is_deleted_with_the_account() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, _) = s
        .post(
            CONTACTS,
            Some(&alice.token),
            json!({ "contacts": [{ "phone": "+15550000001" }, { "phone": "+15550000002" }] }),
        )
        .await;
    assert_eq!(status, 200);
    let db = &s.services().db;
    let alice_id = ruma::OwnedUserId::try_from(alice.user_id.as_str()).unwrap();
    let book = bigd::storage::prefix(&(alice_id.clone(),));
    assert_eq!(
        db.scan_prefix(bigd::storage::USERIDHASH_CONTACT, &book)
            .unwrap()
            .len(),
        2
    );
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            json!({ "auth": password_auth("alice", None) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        db.scan_prefix(bigd::storage::USERIDHASH_CONTACT, &book)
            .unwrap()
            .is_empty()
    );
    assert!(
        db.scan_prefix(bigd::storage::HASHUSERID_, b"")
            .unwrap()
            .is_empty()
    );
    // Someone getting one of those numbers later is fine, and tells nobody.
    let bob = s.register("bob").await;
    set_phone(&s, "+15550000001", &bob);
}

#[tokio::test]
async fn replace_drops_the_previous_phone_book() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let upload = |phone: &str, replace: bool| json!({ "contacts": [{ "phone": phone }], "replace": replace });
    s.post(CONTACTS, Some(&alice.token), upload("+15550000001", false))
        .await;
    s.post(CONTACTS, Some(&alice.token), upload("+15550000002", false))
        .await;
    let db = &s.services().db;
    let alice_id = ruma::OwnedUserId::try_from(alice.user_id.as_str()).unwrap();
    let book = bigd::storage::prefix(&(alice_id,));
    let count = || {
        db.scan_prefix(bigd::storage::USERIDHASH_CONTACT, &book)
            .unwrap()
            .len()
    };
    assert_eq!(count(), 2);
    s.post(CONTACTS, Some(&alice.token), upload("+15550000003", true))
        .await;
    assert_eq!(count(), 1);
}

#[tokio::test]
async fn looking_up_numbers_is_limited_per_user_by_volume() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.contact_lookups_per_user = bigd::config::RateLimit {
            per_second: 0.001,
            burst: 5,
        };
    })
    .await;
    let alice = s.register("alice").await;
    let book = |n: u64| {
        let contacts: Vec<Value> = (0..n)
            .map(|i| json!({ "phone": format!("+4477009{:05}", i) }))
            .collect();
        json!({ "contacts": contacts })
    };
    let (status, body) = s.post(CONTACTS, Some(&alice.token), book(3)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // 3 of 5 used: 3 more is too many, 2 more fit.
    let got = s.post(CONTACTS, Some(&alice.token), book(3)).await;
    assert_error(&got, 429, "M_LIMIT_EXCEEDED");
    assert!(got.1["retry_after_ms"].as_u64().unwrap() > 0);
    let (status, _) = s.post(CONTACTS, Some(&alice.token), book(2)).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    // The identity lookup draws on the same budget.
    let (_, details) = s
        .get("/_matrix/identity/v2/hash_details", Some(&alice.token))
        .await;
    let got = s
        .post(
            "/_matrix/identity/v2/lookup",
            Some(&alice.token),
            json!({ "algorithm": "none", "pepper": details["lookup_pepper"], "addresses": ["447700900001 msisdn"] }),
        )
        .await;
    assert_error(&got, 429, "M_LIMIT_EXCEEDED");
    // Other users have their own budget.
    let bob = s.register("bob").await;
    let (status, _) = s.post(CONTACTS, Some(&bob.token), book(3)).await;
    assert_eq!(status, reqwest::StatusCode::OK);
}
