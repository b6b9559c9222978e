//! Behaviour every endpoint shares: routing errors, JSON errors, auth errors,
//! body limits, CORS, path variants.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn unknown_endpoint_and_wrong_method_are_unrecognized() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/no_such_thing", None).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(&s.get("/nothing/here", None).await, 404, "M_UNRECOGNIZED");
    assert_error(
        &s.request(Method::DELETE, "/_matrix/client/v3/login", None, None)
            .await,
        405,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn malformed_json_and_wrong_shapes() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .post(format!("{}/_matrix/client/v3/login", s.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");

    // Valid JSON, but `password` must be a string.
    let got = s
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "a" }, "password": 5 }))
        .await;
    assert_error(&got, 400, "M_BAD_JSON");

    // A malformed user id in the path.
    let alice = s.register("alice").await;
    let got = s
        .get(
            "/_matrix/client/v3/user/not-a-user-id/account_data/x",
            Some(&alice.token),
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn token_errors() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let got = s
        .get("/_matrix/client/v3/account/whoami", Some("garbage"))
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    assert_ne!(got.1["soft_logout"], true);

    // The deprecated query parameter still works.
    let alice = s.register("alice").await;
    let (status, body) = s
        .get(
            &format!(
                "/_matrix/client/v3/account/whoami?access_token={}",
                alice.token
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
}

#[tokio::test]
async fn request_body_limit() {
    let s = TestServer::start_with(|c| c.http.max_request_bytes = 8192).await;
    let alice = s.register("alice").await;
    let big = "x".repeat(20_000);
    let got = s
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/big",
            Some(&alice.token),
            json!({ "v": big }),
        )
        .await;
    assert_error(&got, 413, "M_TOO_LARGE");
    let small = s
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/small",
            Some(&alice.token),
            json!({ "v": 1 }),
        )
        .await;
    assert_eq!(small.0, 200);
}

#[tokio::test]
async fn cors_headers_and_preflight() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/login", s.base),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in ["x-requested-with", "content-type", "authorization"] {
        assert!(headers.contains(name), "{headers}");
    }
    let resp = s
        .http
        .get(format!("{}/_matrix/client/versions", s.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn every_ruma_path_variant_is_served() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    for path in [
        "/_matrix/client/r0/account/whoami",
        "/_matrix/client/v3/account/whoami",
    ] {
        let (status, body) = s.get(path, Some(&alice.token)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = s.get("/_matrix/client/r0/login", None).await;
    assert_eq!(status, 200);
    // HEAD is answered like GET.
    let resp = s
        .http
        .head(format!("{}/_matrix/client/versions", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unsupported_threepid_media() {
    let s = TestServer::start().await;
    let body = json!({ "client_secret": "abcdef", "email": "a@example.org", "send_attempt": 1 });
    for path in [
        "/_matrix/client/v3/register/email/requestToken",
        "/_matrix/client/v3/account/password/email/requestToken",
        "/_matrix/client/v3/account/3pid/email/requestToken",
    ] {
        assert_error(
            &s.post(path, None, body.clone()).await,
            400,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        );
    }
    // Phone numbers are supported (tests/it/sms.rs), except for password resets.
    let body = json!({ "client_secret": "abcdef", "country": "GB", "phone_number": "07700900001", "send_attempt": 1 });
    assert_error(
        &s.post(
            "/_matrix/client/v3/account/password/msisdn/requestToken",
            None,
            body,
        )
        .await,
        400,
        "M_THREEPID_MEDIUM_NOT_SUPPORTED",
    );
    let alice = s.register("alice").await;
    let (status, body) = s
        .get("/_matrix/client/v3/account/3pid", Some(&alice.token))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["threepids"].as_array().is_none_or(|t| t.is_empty()),
        "{body}"
    );
}
