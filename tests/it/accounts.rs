//! Registration, login, logout, whoami, password change and deactivation.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn registration_offers_dummy_then_creates_the_account() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["flows"],
        json!([{ "stages": ["m.login.dummy"] }, { "stages": ["m.login.msisdn"] }])
    );
    let session = body["session"].as_str().unwrap();

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "Alice", "password": PASSWORD, "initial_device_display_name": "Phone",
                    "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    assert!(
        body["expires_in_ms"].is_null(),
        "tokens without refresh do not expire"
    );
    let alice = session_from(&body);
    assert_eq!(alice.user_id, "@alice:localhost");

    let (status, me) = s
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], alice.device_id.as_str());
    assert_ne!(me["is_guest"], true);
    let (_, devices) = s
        .get("/_matrix/client/v3/devices", Some(&alice.token))
        .await;
    assert_eq!(devices["devices"][0]["display_name"], "Phone");
    // The display name defaults to the localpart.
    let (_, name) = s
        .get(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            None,
        )
        .await;
    assert_eq!(name, json!({ "displayname": "alice" }));
}

#[tokio::test]
async fn username_rules_and_availability() {
    let s = TestServer::start().await;
    let (status, body) = s
        .get("/_matrix/client/v3/register/available?username=bob", None)
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({ "available": true })));
    s.register("bob").await;
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=bob", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=b%20b", None)
            .await,
        400,
        "M_INVALID_USERNAME",
    );

    let taken = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "bob", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(&taken, 400, "M_USER_IN_USE");
    for bad in ["with space", "emoji😀", "_reserved", "", &"x".repeat(260)] {
        let got = s
            .post("/_matrix/client/v3/register", None, json!({ "username": bad, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }))
            .await;
        assert_error(&got, 400, "M_INVALID_USERNAME");
    }
    let weak = s
        .post("/_matrix/client/v3/register", None, json!({ "username": "carol", "password": "short", "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_error(&weak, 400, "M_WEAK_PASSWORD");
}

#[tokio::test]
async fn generated_username_and_inhibit_login() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["user_id"].as_str().unwrap().ends_with(":localhost"));

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "quiet", "password": PASSWORD, "inhibit_login": true, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@quiet:localhost");
    assert!(
        body["access_token"].is_null() && body["device_id"].is_null(),
        "{body}"
    );
    s.login_ok("quiet").await;
}

#[tokio::test]
async fn registration_disabled_and_guests_refused() {
    let s = TestServer::start_with(|c| c.registration.enabled = false).await;
    let got = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "x", "password": PASSWORD }),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    let s = TestServer::start().await;
    let got = s
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_error(&got, 403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn registration_tokens_limit_uses() {
    let s = TestServer::start_with(|c| c.registration.tokens_required = true).await;
    // Tokens are created by the admin CLI (tested in cli.rs); here through the same service.
    let token = s.create_registration_token(Some("invite-1"), Some(1));
    assert_eq!(token, "invite-1");

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "t1", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["flows"],
        json!([
            { "stages": ["m.login.registration_token"] },
            { "stages": ["m.login.registration_token", "m.login.msisdn"] },
        ])
    );
    let session = body["session"].as_str().unwrap().to_owned();

    let valid = |t: &str| {
        format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={t}")
    };
    assert_eq!(
        s.get(&valid("invite-1"), None).await.1,
        json!({ "valid": true })
    );
    assert_eq!(
        s.get(&valid("nope"), None).await.1,
        json!({ "valid": false })
    );

    // A wrong token: 401 with the flows and the stage's error.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "t1", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_eq!(body["session"], session.as_str());

    // The dummy stage is not offered when tokens are required.
    let (status, _) = s
        .post("/_matrix/client/v3/register", None, json!({ "username": "t1", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }))
        .await;
    assert_eq!(status, 401);

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "t1", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "invite-1", "session": session } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.get(&valid("invite-1"), None).await.1,
        json!({ "valid": false }),
        "used up"
    );

    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "t2", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "invite-1" } }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn login_flows_and_password_login() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200);
    assert!(
        body["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.password")
    );

    s.register("alice").await;
    for name in ["alice", "@alice:localhost", "ALICE"] {
        let (status, body) = s.login(name, PASSWORD).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["user_id"], "@alice:localhost");
        assert!(body["access_token"].is_string() && body["device_id"].is_string());
        assert_eq!(
            body["well_known"]["m.homeserver"]["base_url"],
            s.base.as_str()
        );
    }
    // The legacy top-level `user` field.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200);

    assert_error(
        &s.login("alice", "wrong password").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&s.login("nobody", PASSWORD).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.login("@alice:elsewhere.example", PASSWORD).await,
        403,
        "M_FORBIDDEN",
    );
    let got = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.token", "token": "x" }),
        )
        .await;
    assert_error(&got, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn login_with_existing_device_id_replaces_its_token() {
    let s = TestServer::start().await;
    s.register("alice").await;
    let login = |device: &'static str| {
        s.post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": PASSWORD, "device_id": device, "initial_device_display_name": "Laptop" }),
        )
    };
    let first = session_from(&login("LAPTOP").await.1);
    assert_eq!(first.device_id, "LAPTOP");
    let second = session_from(&login("LAPTOP").await.1);
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&first.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let (status, me) = s
        .get("/_matrix/client/v3/account/whoami", Some(&second.token))
        .await;
    assert_eq!(
        (status.as_u16(), me["device_id"].as_str()),
        (200, Some("LAPTOP"))
    );
    let (_, devices) = s
        .get("/_matrix/client/v3/devices", Some(&second.token))
        .await;
    let laptops: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device_id"] == "LAPTOP")
        .collect();
    assert_eq!(laptops.len(), 1);
}

#[tokio::test]
async fn logout_revokes_at_once_and_logout_all_revokes_everything() {
    let s = TestServer::start().await;
    let a1 = s.register("alice").await;
    let a2 = s.login_ok("alice").await;
    let a3 = s.login_ok("alice").await;

    let (status, _) = s
        .post("/_matrix/client/v3/logout", Some(&a1.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let got = s
        .get("/_matrix/client/v3/account/whoami", Some(&a1.token))
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    assert_ne!(got.1["soft_logout"], true);
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", Some(&a2.token))
            .await
            .0,
        200
    );

    let (status, _) = s
        .post("/_matrix/client/v3/logout/all", Some(&a2.token), json!({}))
        .await;
    assert_eq!(status, 200);
    for t in [&a2.token, &a3.token] {
        assert_error(
            &s.get("/_matrix/client/v3/account/whoami", Some(t)).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    let fresh = s.login_ok("alice").await;
    let (_, devices) = s
        .get("/_matrix/client/v3/devices", Some(&fresh.token))
        .await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn password_change_needs_uia_and_logs_out_other_devices() {
    let s = TestServer::start().await;
    let main = s.register("alice").await;
    let other = s.login_ok("alice").await;
    let path = "/_matrix/client/v3/account/password";

    let (status, body) = s
        .post(
            path,
            Some(&main.token),
            json!({ "new_password": "a brand new secret" }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let session = body["session"].as_str().unwrap().to_owned();

    let mut wrong = password_auth("alice", Some(&session));
    wrong["password"] = json!("not it");
    let (status, body) = s
        .post(
            path,
            Some(&main.token),
            json!({ "new_password": "a brand new secret", "auth": wrong }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    // Another user's identifier does not count.
    s.register("mallory").await;
    let (status, _) = s
        .post(path, Some(&main.token), json!({ "new_password": "a brand new secret", "auth": password_auth("mallory", Some(&session)) }))
        .await;
    assert_eq!(status, 401);

    let (status, body) = s
        .post(path, Some(&main.token), json!({ "new_password": "a brand new secret", "auth": password_auth("alice", Some(&session)) }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", Some(&main.token))
            .await
            .0,
        200
    );
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&other.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&s.login("alice", PASSWORD).await, 403, "M_FORBIDDEN");
    assert_eq!(s.login("alice", "a brand new secret").await.0, 200);
}

#[tokio::test]
async fn password_change_can_keep_other_devices() {
    let s = TestServer::start().await;
    let main = s.register("alice").await;
    let other = s.login_ok("alice").await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/password",
            Some(&main.token),
            json!({ "new_password": "another secret!", "logout_devices": false, "auth": password_auth("alice", None) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", Some(&other.token))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn deactivation_is_final_and_the_name_is_never_reused() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let path = "/_matrix/client/v3/account/deactivate";
    let (status, body) = s.post(path, Some(&alice.token), json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = s
        .post(
            path,
            Some(&alice.token),
            json!({ "auth": password_auth("alice", None) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&alice.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&s.login("alice", PASSWORD).await, 403, "M_USER_DEACTIVATED");
    assert_error(
        &s.get("/_matrix/client/v3/profile/@alice:localhost", None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    let again = s
        .post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_error(&again, 400, "M_USER_IN_USE");
}
