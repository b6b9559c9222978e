use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn list_get_update_and_last_seen() {
    let s = TestServer::start().await;
    let phone = s.register("alice").await;
    let laptop = s.login_ok("alice").await;
    s.get("/_matrix/client/v3/account/whoami", Some(&laptop.token))
        .await;

    let (status, body) = s
        .get("/_matrix/client/v3/devices", Some(&phone.token))
        .await;
    assert_eq!(status, 200);
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        assert_eq!(d["last_seen_ip"], "127.0.0.1", "{d}");
        assert!(d["last_seen_ts"].as_u64().unwrap() > 1_600_000_000_000);
    }

    let path = format!("/_matrix/client/v3/devices/{}", laptop.device_id);
    let (status, _) = s
        .put(
            &path,
            Some(&phone.token),
            json!({ "display_name": "Work laptop" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.get(&path, Some(&phone.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["device_id"], laptop.device_id.as_str());
    assert_eq!(body["display_name"], "Work laptop");

    assert_error(
        &s.get("/_matrix/client/v3/devices/NOPE", Some(&phone.token))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.put(
            "/_matrix/client/v3/devices/NOPE",
            Some(&phone.token),
            json!({ "display_name": "x" }),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    // Another user's device is invisible.
    let bob = s.register("bob").await;
    assert_error(&s.get(&path, Some(&bob.token)).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_a_device_needs_uia_and_revokes_its_token() {
    let s = TestServer::start().await;
    let phone = s.register("alice").await;
    let laptop = s.login_ok("alice").await;
    let path = format!("/_matrix/client/v3/devices/{}", laptop.device_id);

    let (status, body) = s.delete(&path, Some(&phone.token), Some(json!({}))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let session = body["session"].as_str().unwrap();
    let (status, body) = s
        .delete(
            &path,
            Some(&phone.token),
            Some(json!({ "auth": password_auth("alice", Some(session)) })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&laptop.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&s.get(&path, Some(&phone.token)).await, 404, "M_NOT_FOUND");
    assert_error(
        &s.delete(
            "/_matrix/client/v3/devices/NOPE",
            Some(&phone.token),
            Some(json!({})),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn delete_devices_in_bulk() {
    let s = TestServer::start().await;
    let keep = s.register("alice").await;
    let a = s.login_ok("alice").await;
    let b = s.login_ok("alice").await;
    let body = json!({ "devices": [a.device_id, b.device_id, "UNKNOWN"] });
    let (status, _) = s
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(&keep.token),
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);
    let mut with_auth = body;
    with_auth["auth"] = password_auth("alice", None);
    let (status, resp) = s
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(&keep.token),
            with_auth,
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    for t in [&a.token, &b.token] {
        assert_error(
            &s.get("/_matrix/client/v3/account/whoami", Some(t)).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&keep.token)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}
