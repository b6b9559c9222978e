//! Room tags, the user directory and the support well-known.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn room_tags_are_set_listed_synced_and_deleted() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let base = format!(
        "/_matrix/client/v3/user/{}/rooms/{room}/tags",
        alice.user_id
    );
    let (status, body) = s.get(&base, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "tags": {} }));
    for (tag, info) in [
        ("m.favourite", json!({ "order": 0.5 })),
        ("u.work", json!({})),
    ] {
        let (status, body) = s
            .put(&format!("{base}/{tag}"), Some(&alice.token), info)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, body) = s.get(&base, Some(&alice.token)).await;
    assert_eq!(body["tags"]["m.favourite"]["order"], 0.5);
    assert_eq!(body["tags"]["u.work"], json!({}));

    // Tags reach sync as the room's m.tag account data.
    let synced = sync(&s, &alice, "").await;
    let events = synced["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let tag_event = events.iter().find(|e| e["type"] == "m.tag").expect("m.tag");
    assert_eq!(tag_event["content"]["tags"]["m.favourite"]["order"], 0.5);

    let (status, _) = s
        .delete(&format!("{base}/u.work"), Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get(&base, Some(&alice.token)).await;
    assert!(body["tags"].get("u.work").is_none());
    assert!(body["tags"].get("m.favourite").is_some());

    // Only one's own tags.
    let got = s.get(&base, Some(&bob.token)).await;
    assert_error(&got, 403, "M_FORBIDDEN");
    let long = "x".repeat(300);
    let got = s
        .put(&format!("{base}/{long}"), Some(&alice.token), json!({}))
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn the_user_directory_finds_room_mates_and_public_room_members_only() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let dave = s.register("dave").await;
    // alice and bob share a private room; carol is in a public room; dave is in
    // nothing anyone else is in.
    let private = s
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "invite": [bob.user_id] }),
        )
        .await;
    s.join(&bob, &private).await;
    let public = s
        .create_room(
            &carol,
            json!({ "preset": "public_chat", "visibility": "public" }),
        )
        .await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            Some(&bob.token),
            json!({ "displayname": "Bobby Tables" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The display name in the room follows the profile only through a new
    // member event, so set it there too.
    s.put(
        &format!(
            "/_matrix/client/v3/rooms/{private}/state/m.room.member/{}",
            bob.user_id
        ),
        Some(&bob.token),
        json!({ "membership": "join", "displayname": "Bobby Tables" }),
    )
    .await;
    let _ = public;

    let search = |who: &Session, term: &str, limit: u64| {
        let body = json!({ "search_term": term, "limit": limit });
        let token = who.token.clone();
        let s = &s;
        async move {
            s.post(
                "/_matrix/client/v3/user_directory/search",
                Some(&token),
                body,
            )
            .await
        }
    };
    let (status, got) = search(&alice, "tables", 10).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["user_id"], bob.user_id.as_str());
    assert_eq!(results[0]["display_name"], "Bobby Tables");
    assert_eq!(got["limited"], false);

    let (_, got) = search(&alice, "carol", 10).await;
    assert_eq!(
        got["results"][0]["user_id"],
        carol.user_id.as_str(),
        "public room member"
    );
    let (_, got) = search(&alice, "dave", 10).await;
    assert_eq!(got["results"], json!([]), "a stranger is not found");
    let (_, got) = search(&dave, "bob", 10).await;
    assert_eq!(got["results"], json!([]));

    let (_, got) = search(&alice, "localhost", 1).await;
    assert_eq!(got["results"].as_array().unwrap().len(), 1);
    assert_eq!(got["limited"], true);
}

#[tokio::test]
async fn support_contacts_are_published_when_configured() {
    let s = TestServer::start().await;
    let got = s.get("/.well-known/matrix/support", None).await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let s = TestServer::start_with(|c| {
        c.well_known.support_page = Some("https://iambig.ai/support".into());
        c.well_known.support_contacts = vec![bigd::config::SupportContact {
            role: "m.role.admin".into(),
            matrix_id: Some("@admin:localhost".into()),
            email_address: None,
        }];
    })
    .await;
    let (status, body) = s.get("/.well-known/matrix/support", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["support_page"], "https://iambig.ai/support");
    assert_eq!(
        body["contacts"],
        json!([{ "role": "m.role.admin", "matrix_id": "@admin:localhost" }])
    );
}

#[tokio::test]
async fn mutual_rooms_lists_the_rooms_both_are_in() {
    let (s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let carol = s.register("carol").await;
    let alone = s.create_room(&alice, json!({})).await;
    let _ = alone;
    let path = |u: &str| format!("/_matrix/client/v1/mutual_rooms?user_id={}", urlencode(u));
    let (status, body) = s.get(&path(&bob.user_id), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["joined"], json!([room]));
    assert_eq!(body["count"], 1);
    let (_, body) = s.get(&path(&carol.user_id), Some(&alice.token)).await;
    assert_eq!(body["joined"], json!([]));
    let got = s.get(&path(&alice.user_id), Some(&alice.token)).await;
    assert_error(&got, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_space_hierarchy_lists_visible_children_breadth_first() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let space = s
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "BIG", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let sub = s
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let general = s
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "General" }),
        )
        .await;
    let secret = s
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let deep = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let link = |parent: &str, child: &str, suggested: bool| {
        let path = format!("/_matrix/client/v3/rooms/{parent}/state/m.space.child/{child}");
        let body = json!({ "via": ["localhost"], "suggested": suggested });
        let token = alice.token.clone();
        let s = &s;
        async move {
            let (status, body) = s.put(&path, Some(&token), body).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    link(&space, &general, true).await;
    link(&space, &sub, false).await;
    link(&space, &secret, false).await;
    link(&sub, &deep, false).await;

    let path = |q: &str| format!("/_matrix/client/v1/rooms/{space}/hierarchy?{q}");
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = s.get(&path(""), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = ids(&body);
    assert_eq!(got[0], space);
    assert!(got.contains(&general) && got.contains(&sub) && got.contains(&deep));
    assert!(!got.contains(&secret), "bob cannot see the private room");
    assert_eq!(body["rooms"][0]["name"], "BIG");
    assert_eq!(body["rooms"][0]["room_type"], "m.space");
    assert_eq!(
        body["rooms"][0]["children_state"].as_array().unwrap().len(),
        3
    );
    // alice is in the private room, so she sees it.
    let (_, body) = s.get(&path(""), Some(&alice.token)).await;
    assert!(ids(&body).contains(&secret));

    let (_, body) = s.get(&path("max_depth=1"), Some(&bob.token)).await;
    assert!(!ids(&body).contains(&deep));
    let (_, body) = s.get(&path("suggested_only=true"), Some(&bob.token)).await;
    assert_eq!(ids(&body), [space.clone(), general.clone()]);

    let (_, first) = s.get(&path("limit=2"), Some(&bob.token)).await;
    assert_eq!(ids(&first).len(), 2);
    let next = first["next_batch"].as_str().unwrap().to_owned();
    let (_, second) = s
        .get(&path(&format!("limit=2&from={next}")), Some(&bob.token))
        .await;
    assert_eq!(ids(&second).len(), 2);
    assert!(second.get("next_batch").is_none_or(|v| v.is_null()));

    let private_space = s
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let got = s
        .get(
            &format!("/_matrix/client/v1/rooms/{private_space}/hierarchy"),
            Some(&bob.token),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    let got = s.get(&path("from=nonsense"), Some(&bob.token)).await;
    assert_error(&got, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn turn_credentials_come_from_the_shared_secret() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s
        .get("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({}), "no TURN configured");

    let s = TestServer::start_with(|c| {
        c.turn.uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.turn.shared_secret = Some("s3cret".into());
    })
    .await;
    let alice = s.register("alice").await;
    let (status, body) = s
        .get("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["uris"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    assert_eq!(body["ttl"], 86400);
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.user_id);
    assert!(expiry.parse::<u64>().unwrap() > 1_700_000_000);
    assert_eq!(body["password"].as_str().unwrap().len(), 28);
}

#[tokio::test]
async fn openid_tokens_identify_their_user_over_federation() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s
        .post(
            &format!(
                "/_matrix/client/v3/user/{}/openid/request_token",
                alice.user_id
            ),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["matrix_server_name"], "localhost");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    let (status, info) = s
        .get(
            &format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info, json!({ "sub": alice.user_id }));
    let got = s
        .get(
            "/_matrix/federation/v1/openid/userinfo?access_token=nope",
            None,
        )
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    let bob = s.register("bob").await;
    let got = s
        .post(
            &format!(
                "/_matrix/client/v3/user/{}/openid/request_token",
                alice.user_id
            ),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn whois_shows_ones_own_devices_and_third_party_lookups_find_nothing() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/admin/whois/{}", alice.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id.as_str());
    let sessions = &body["devices"][&alice.device_id]["sessions"];
    assert!(
        sessions[0]["connections"][0]["ip"].as_str().is_some(),
        "{body}"
    );
    let got = s
        .get(
            &format!("/_matrix/client/v3/admin/whois/{}", alice.user_id),
            Some(&bob.token),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");

    let (status, body) = s
        .get(
            "/_matrix/client/v3/thirdparty/protocols",
            Some(&alice.token),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let got = s
        .get(
            "/_matrix/client/v3/thirdparty/protocol/irc",
            Some(&alice.token),
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let (status, body) = s
        .get(
            "/_matrix/client/v3/thirdparty/location?alias=%23a%3Alocalhost",
            Some(&alice.token),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}
