use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn login_is_limited_per_ip_and_per_account() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = bigd::config::RateLimit {
            per_second: 0.01,
            burst: 100,
        };
        c.rate_limits.login_per_account = bigd::config::RateLimit {
            per_second: 0.01,
            burst: 3,
        };
        c.rate_limits.register_per_ip = bigd::config::RateLimit {
            per_second: 0.01,
            burst: 100,
        };
    })
    .await;
    s.register("alice").await;
    s.register("bob").await;
    for _ in 0..3 {
        assert_eq!(s.login("alice", "wrong").await.0, 403);
    }
    let limited = s.login("alice", PASSWORD).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().unwrap() > 1_000);
    // Another account from the same IP is not affected by alice's limit.
    assert_eq!(s.login("bob", PASSWORD).await.0, 200);
}

#[tokio::test]
async fn login_and_registration_are_limited_per_ip() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = bigd::config::RateLimit {
            per_second: 0.01,
            burst: 2,
        };
        c.rate_limits.register_per_ip = bigd::config::RateLimit {
            per_second: 0.01,
            burst: 2,
        };
    })
    .await;
    s.register("a1").await;
    s.register("a2").await;
    let got = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "a3", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(&got, 429, "M_LIMIT_EXCEEDED");
    s.login("a1", PASSWORD).await;
    s.login("a2", PASSWORD).await;
    assert_error(&s.login("a1", PASSWORD).await, 429, "M_LIMIT_EXCEEDED");
}
