//! `GET /voip/turnServer`: TURN credentials for calls.

use std::time::Duration;

use axum::{Json, extract::State};
use ruma::api::client::voip::get_turn_server_info;
use serde_json::{Value, json};

use crate::{
    api::{AppState, ruma::Ruma},
    error::Result,
};

/// Without TURN configured the answer is `{}`, as Synapse gives: clients
/// then call without a relay.
pub async fn turn_server(
    State(s): State<AppState>,
    req: Ruma<get_turn_server_info::v3::Request>,
) -> Result<Json<Value>> {
    let me = req.identity()?;
    let turn = &s.config.turn;
    if turn.uris.is_empty() {
        return Ok(Json(json!({})));
    }
    let (username, password, ttl) = match &turn.shared_secret {
        Some(secret) => {
            let ttl = Duration::from_millis(turn.user_lifetime_ms);
            let (username, password) =
                shared_secret_credentials(secret, me.user_id.as_str(), crate::util::now_ms(), ttl);
            (username, password, ttl)
        }
        None => (
            turn.username.clone().unwrap_or_default(),
            turn.password.clone().unwrap_or_default(),
            Duration::from_millis(turn.user_lifetime_ms),
        ),
    };
    Ok(Json(json!({
        "username": username,
        "password": password,
        "uris": turn.uris,
        "ttl": ttl.as_secs(),
    })))
}

/// The TURN REST API scheme coturn's `use-auth-secret` checks: the username
/// is "<expiry in unix seconds>:<user>", the password the base64 of its
/// HMAC-SHA1 under the shared secret.
pub fn shared_secret_credentials(
    secret: &str,
    user: &str,
    now_ms: u64,
    ttl: Duration,
) -> (String, String) {
    use base64::Engine as _;
    let expiry = now_ms / 1000 + ttl.as_secs();
    let username = format!("{expiry}:{user}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        // RFC 2202 test case 2: HMAC-SHA1 of "what do ya want for nothing?"
        // under "Jefe" is effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        let (user, password) = shared_secret_credentials("Jefe", "x", 0, Duration::ZERO);
        assert_eq!(user, "0:x");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"Jefe");
        let tag = ring::hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        assert_eq!(password.len(), 28, "base64 of 20 bytes");
        let (user, _) = shared_secret_credentials("s", "@a:b", 10_000, Duration::from_secs(60));
        assert_eq!(user, "70:@a:b");
    }
}
