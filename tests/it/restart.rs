//! Everything written before a restart is there after it.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn accounts_devices_tokens_and_account_data_survive_a_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let laptop = s.login_ok("alice").await;
    s.put(
        &format!("/_matrix/client/v3/devices/{}", laptop.device_id),
        Some(&alice.token),
        json!({ "display_name": "Laptop" }),
    )
    .await;
    s.put(
        "/_matrix/client/v3/user/@alice:localhost/account_data/ai.iambig.x",
        Some(&alice.token),
        json!({ "kept": 1 }),
    )
    .await;
    s.put(
        "/_matrix/client/v3/profile/@alice:localhost/displayname",
        Some(&alice.token),
        json!({ "displayname": "Alice" }),
    )
    .await;
    let (_, filter) = s
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            Some(&alice.token),
            json!({ "presence": { "limit": 1 } }),
        )
        .await;
    let filter_id = filter["filter_id"].as_str().unwrap().to_owned();
    let logged_out = s.login_ok("alice").await;
    s.post(
        "/_matrix/client/v3/logout",
        Some(&logged_out.token),
        json!({}),
    )
    .await;

    // A refresh token rotated just before the restart.
    let (_, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD, "refresh_token": true }),
        )
        .await;
    let r1 = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = s
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": r1 }),
        )
        .await;
    assert_eq!(status, 200);
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();

    s.restart().await;

    let (status, me) = s
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, 200, "access tokens stay valid: {me}");
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", Some(&laptop.token))
            .await
            .0,
        200
    );
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&logged_out.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(s.login("alice", PASSWORD).await.0, 200);

    let (_, devices) = s
        .get("/_matrix/client/v3/devices", Some(&alice.token))
        .await;
    let names: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["display_name"].clone())
        .collect();
    assert!(names.contains(&json!("Laptop")), "{devices}");
    assert_eq!(
        s.get(
            "/_matrix/client/v3/user/@alice:localhost/account_data/ai.iambig.x",
            Some(&alice.token)
        )
        .await
        .1,
        json!({ "kept": 1 })
    );
    assert_eq!(
        s.get(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            None
        )
        .await
        .1,
        json!({ "displayname": "Alice" })
    );
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/user/@alice:localhost/filter/{filter_id}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200);

    // The rotated refresh token works once after the restart; its predecessor is spent.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": r2 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let a3 = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", Some(&a3))
            .await
            .0,
        200
    );
    assert_error(
        &s.post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": r2 }),
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // A registration after the restart does not collide with anything before it.
    s.register("bob").await;
    s.stop().await;
}
