//! Account data and filters: stored and returned exactly.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn global_and_room_account_data_round_trip_exactly() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let path = "/_matrix/client/v3/user/@alice:localhost/account_data/ai.iambig.settings";
    assert_error(&s.get(path, Some(&alice.token)).await, 404, "M_NOT_FOUND");

    // Key order, spacing and number forms are kept byte-for-byte.
    let raw = r#"{"z": 1, "a": [1.50, "ü"], "nested": {"b": null}}"#;
    let resp = s
        .http
        .put(format!("{}{path}", s.base))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), raw);

    let room_path =
        "/_matrix/client/v3/user/@alice:localhost/rooms/!room:localhost/account_data/m.tag";
    let (status, _) = s
        .put(
            room_path,
            Some(&alice.token),
            json!({ "tags": { "u.work": {} } }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.get(room_path, Some(&alice.token)).await.1,
        json!({ "tags": { "u.work": {} } })
    );
    // Room data does not leak into global data of the same type.
    assert_error(
        &s.get(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.tag",
            Some(&alice.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    let (status, _) = s
        .put(path, Some(&alice.token), json!({ "replaced": true }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.get(path, Some(&alice.token)).await.1,
        json!({ "replaced": true })
    );
}

#[tokio::test]
async fn account_data_rules() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let path = "/_matrix/client/v3/user/@alice:localhost/account_data/x.y";
    assert_error(
        &s.put(path, Some(&bob.token), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&s.get(path, Some(&bob.token)).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.put(path, Some(&alice.token), json!([1, 2])).await,
        400,
        "M_BAD_JSON",
    );
    let got = s
        .put(
            "/_matrix/client/v3/user/@alice:localhost/rooms/!r:localhost/account_data/m.fully_read",
            Some(&alice.token),
            json!({ "event_id": "$x" }),
        )
        .await;
    assert_error(&got, 405, "M_BAD_JSON");
    assert_error(
        &s.put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.push_rules",
            Some(&alice.token),
            json!({}),
        )
        .await,
        405,
        "M_BAD_JSON",
    );
    let got = s
        .put(
            "/_matrix/client/v3/user/@alice:localhost/rooms/not-a-room/account_data/x",
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn filters_are_kept_exactly_and_privately() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let raw = r#"{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true}},"event_fields":["type","content.body"]}"#;
    let resp = s
        .http
        .post(format!(
            "{}/_matrix/client/v3/user/@alice:localhost/filter",
            s.base
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<serde_json::Value>().await.unwrap()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let path = format!("/_matrix/client/v3/user/@alice:localhost/filter/{id}");
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), raw);

    assert_error(&s.get(&path, Some(&bob.token)).await, 403, "M_FORBIDDEN");
    let bobs_view = format!("/_matrix/client/v3/user/@bob:localhost/filter/{id}");
    assert_error(
        &s.get(&bobs_view, Some(&bob.token)).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            "/_matrix/client/v3/user/@alice:localhost/filter/999999",
            Some(&alice.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            "/_matrix/client/v3/user/@alice:localhost/filter/abc",
            Some(&alice.token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    let got = s
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            Some(&alice.token),
            json!({ "room": { "timeline": { "limit": "ten" } } }),
        )
        .await;
    assert_error(&got, 400, "M_BAD_JSON");
    let got = s
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
}
