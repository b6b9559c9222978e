//! Refresh tokens: rotation, the spec's retry grace, reuse detection, expiry.

use serde_json::json;

use crate::common::*;

async fn login_refreshable(s: &TestServer) -> Session {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": PASSWORD, "refresh_token": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_in_ms"].as_u64().unwrap() > 0);
    session_from(&body)
}

async fn refresh(s: &TestServer, token: &str) -> (reqwest::StatusCode, serde_json::Value) {
    s.post(
        "/_matrix/client/v3/refresh",
        None,
        json!({ "refresh_token": token }),
    )
    .await
}

async fn whoami(s: &TestServer, token: &str) -> u16 {
    s.get("/_matrix/client/v3/account/whoami", Some(token))
        .await
        .0
        .as_u16()
}

#[tokio::test]
async fn refresh_rotates_and_detects_reuse() {
    let s = TestServer::start().await;
    s.register("alice").await;
    let first = login_refreshable(&s).await;
    let r1 = first.refresh_token.clone().unwrap();

    let (status, body) = refresh(&s, &r1).await;
    assert_eq!(status, 200, "{body}");
    let a2 = body["access_token"].as_str().unwrap().to_owned();
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert!(body["expires_in_ms"].as_u64().unwrap() > 0);

    // Using the new access token retires the old pair.
    assert_eq!(whoami(&s, &a2).await, 200);
    let got = s
        .get("/_matrix/client/v3/account/whoami", Some(&first.token))
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");

    // Presenting the spent refresh token again revokes the whole session.
    assert_error(&refresh(&s, &r1).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&a2)).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&refresh(&s, &r2).await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn lost_refresh_response_can_be_retried_once() {
    let s = TestServer::start().await;
    s.register("alice").await;
    let first = login_refreshable(&s).await;
    let r1 = first.refresh_token.unwrap();
    let (status, lost) = refresh(&s, &r1).await; // the client never saw this answer
    assert_eq!(status, 200);
    let (status, body) = refresh(&s, &r1).await;
    assert_eq!(status, 200, "retry while the new pair is unused: {body}");
    let a3 = body["access_token"].as_str().unwrap();
    assert_eq!(whoami(&s, a3).await, 200);
    // The pair from the lost answer was superseded.
    assert_eq!(
        whoami(&s, lost["access_token"].as_str().unwrap()).await,
        401
    );
}

#[tokio::test]
async fn refreshable_access_tokens_expire_with_soft_logout() {
    let s = TestServer::start_with(|c| c.auth.refreshable_access_token_lifetime_ms = 1_000).await;
    s.register("alice").await;
    let session = login_refreshable(&s).await;
    assert_eq!(whoami(&s, &session.token).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let got = s
        .get("/_matrix/client/v3/account/whoami", Some(&session.token))
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(got.1["soft_logout"], true);
    let (status, body) = refresh(&s, session.refresh_token.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        whoami(&s, body["access_token"].as_str().unwrap()).await,
        200
    );
}

#[tokio::test]
async fn registration_can_ask_for_a_refresh_token() {
    let s = TestServer::start().await;
    let alice = s
        .register_with(json!({ "username": "alice", "password": PASSWORD, "refresh_token": true }))
        .await;
    assert!(alice.refresh_token.is_some());
    let (status, _) = refresh(&s, alice.refresh_token.as_deref().unwrap()).await;
    assert_eq!(status, 200);
    assert_error(&refresh(&s, "bigd_r_unknown").await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn logout_kills_refresh_tokens_too() {
    let s = TestServer::start().await;
    s.register("alice").await;
    let session = login_refreshable(&s).await;
    s.post("/_matrix/client/v3/logout", Some(&session.token), json!({}))
        .await;
    assert_error(
        &refresh(&s, session.refresh_token.as_deref().unwrap()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}
