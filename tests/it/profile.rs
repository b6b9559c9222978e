use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn displayname_avatar_and_whole_profile() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let base = "/_matrix/client/v3/profile/@alice:localhost";

    let (status, _) = s
        .put(
            &format!("{base}/displayname"),
            Some(&alice.token),
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .put(
            &format!("{base}/avatar_url"),
            Some(&alice.token),
            json!({ "avatar_url": "mxc://localhost/abc123" }),
        )
        .await;
    assert_eq!(status, 200);

    let (status, body) = s.get(base, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "displayname": "Alice A.", "avatar_url": "mxc://localhost/abc123" })
    );
    assert_eq!(
        s.get(&format!("{base}/displayname"), None).await.1,
        json!({ "displayname": "Alice A." })
    );
    // The r0 path too.
    assert_eq!(
        s.get(
            "/_matrix/client/r0/profile/@alice:localhost/displayname",
            None
        )
        .await
        .0,
        200
    );

    let bad = s
        .put(
            &format!("{base}/avatar_url"),
            Some(&alice.token),
            json!({ "avatar_url": "https://x.example/a.png" }),
        )
        .await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    let bad = s
        .put(
            &format!("{base}/displayname"),
            Some(&alice.token),
            json!({ "displayname": 5 }),
        )
        .await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    let bad = s
        .put(
            &format!("{base}/displayname"),
            Some(&alice.token),
            json!({ "other": "x" }),
        )
        .await;
    assert_eq!(bad.0, 400, "{}", bad.1);

    let (status, _) = s
        .delete(&format!("{base}/avatar_url"), Some(&alice.token), None)
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.get(&format!("{base}/avatar_url"), None).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn only_the_owner_changes_a_profile() {
    let s = TestServer::start().await;
    s.register("alice").await;
    let bob = s.register("bob").await;
    let got = s
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            Some(&bob.token),
            json!({ "displayname": "pwned" }),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    let got = s
        .delete(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            Some(&bob.token),
            None,
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    assert_error(
        &s.put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            None,
            json!({ "displayname": "x" }),
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn unknown_users_have_no_profile() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/profile/@nobody:localhost", None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            "/_matrix/client/v3/profile/@nobody:localhost/displayname",
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn custom_fields_and_their_limits() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let base = "/_matrix/client/v3/profile/@alice:localhost";
    let (status, body) = s
        .put(
            &format!("{base}/m.tz"),
            Some(&alice.token),
            json!({ "m.tz": "Europe/Berlin" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .put(
            &format!("{base}/ai.iambig.mood"),
            Some(&alice.token),
            json!({ "ai.iambig.mood": { "emoji": "🙂", "n": [1, 2] } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = s.get(&format!("{base}/ai.iambig.mood"), None).await;
    assert_eq!(
        body,
        json!({ "ai.iambig.mood": { "emoji": "🙂", "n": [1, 2] } })
    );
    let (_, profile) = s.get(base, None).await;
    assert_eq!(profile["m.tz"], "Europe/Berlin");

    let long_key = format!("ai.iambig.{}", "k".repeat(250));
    let got = s
        .put(
            &format!("{base}/{long_key}"),
            Some(&alice.token),
            json!({ long_key.clone(): 1 }),
        )
        .await;
    assert_error(&got, 400, "M_KEY_TOO_LARGE");

    let chunk = "v".repeat(40 * 1024);
    let got = s
        .put(
            &format!("{base}/ai.iambig.a"),
            Some(&alice.token),
            json!({ "ai.iambig.a": chunk }),
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    let got = s
        .put(
            &format!("{base}/ai.iambig.b"),
            Some(&alice.token),
            json!({ "ai.iambig.b": chunk }),
        )
        .await;
    assert_error(&got, 400, "M_PROFILE_TOO_LARGE");

    let (status, _) = s
        .delete(&format!("{base}/m.tz"), Some(&alice.token), None)
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.get(&format!("{base}/m.tz"), None).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn display_name_and_avatar_changes_reach_the_member_events() {
    let (s, alice, bob, room) = crate::common::alice_and_bob_in_a_public_room().await;
    let member = format!(
        "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
        alice.user_id
    );
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.token),
            serde_json::json!({ "displayname": "Alice Liddell" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.put(
        &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
        Some(&alice.token),
        serde_json::json!({ "avatar_url": "mxc://localhost/abc" }),
    )
    .await;
    let (_, content) = s.get(&member, Some(&bob.token)).await;
    assert_eq!(content["displayname"], "Alice Liddell");
    assert_eq!(content["avatar_url"], "mxc://localhost/abc");
    assert_eq!(content["membership"], "join");

    s.delete(
        &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    let (_, content) = s.get(&member, Some(&bob.token)).await;
    assert!(content.get("avatar_url").is_none(), "{content}");
    assert_eq!(content["displayname"], "Alice Liddell");
}
