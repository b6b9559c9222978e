use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn versions_lists_only_implemented_versions() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    let versions: Vec<&str> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"v1.1") && versions.contains(&"v1.10"),
        "{versions:?}"
    );
    // Authenticated media (v1.11) came with the media repository; later
    // versions need more than bigd has yet.
    assert!(versions.contains(&"v1.11"));
    assert!(!versions.contains(&"v1.12"));
    assert!(body["unstable_features"].is_object());
}

#[tokio::test]
async fn well_known_from_config() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["m.homeserver"]["base_url"], s.base.as_str());
    assert_error(
        &s.get("/.well-known/matrix/server", None).await,
        404,
        "M_NOT_FOUND",
    );

    let s = TestServer::start_with(|c| {
        c.public_baseurl = Some("https://matrix.example.org/".into());
        c.well_known.server = Some("matrix.example.org:443".into());
    })
    .await;
    let (_, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(
        body,
        json!({ "m.homeserver": { "base_url": "https://matrix.example.org" } })
    );
    let (status, body) = s.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "m.server": "matrix.example.org:443" }));
}

#[tokio::test]
async fn capabilities_advertise_room_versions_and_account_features() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/capabilities", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let alice = s.register("alice").await;
    let (status, body) = s
        .get("/_matrix/client/v3/capabilities", Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{body}");
    let caps = &body["capabilities"];
    assert_eq!(caps["m.room_versions"]["default"], "12");
    for v in ["10", "11", "12"] {
        assert_eq!(caps["m.room_versions"]["available"][v], "stable");
    }
    // Capabilities at their default (enabled) may be omitted, as the spec allows.
    for cap in ["m.change_password", "m.set_displayname", "m.set_avatar_url"] {
        assert_ne!(caps[cap]["enabled"], false, "{cap}");
    }
    // Phone numbers can be added and removed.
    assert_ne!(caps["m.3pid_changes"]["enabled"], false);
    assert_eq!(caps["m.profile_fields"]["enabled"], true);
}
