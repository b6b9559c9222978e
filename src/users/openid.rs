//! OpenID tokens (`POST /user/{userId}/openid/request_token`): short-lived
//! tokens a user hands to a third party (a widget, a call service), which
//! asks this server who the token belongs to over federation
//! (`GET /_matrix/federation/v1/openid/userinfo`). Only their SHA-256 is stored.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::Users;
use crate::{
    error::Result,
    storage::{OPENIDHASH_TOKEN, Raw},
    util::{ALPHANUMERIC, now_ms, random_string_from, sha256_hex},
};

/// How long an OpenID token is valid.
pub const OPENID_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Serialize, Deserialize)]
struct OpenIdRecord {
    user: OwnedUserId,
    expires_ms: u64,
}

impl Users {
    /// A new OpenID token for `user`.
    pub fn issue_openid_token(&self, user: &UserId) -> Result<String> {
        let token = random_string_from(ALPHANUMERIC, 32);
        let now = now_ms();
        let record = OpenIdRecord {
            user: user.to_owned(),
            expires_ms: now + OPENID_LIFETIME.as_millis() as u64,
        };
        let mut batch = self.db.batch();
        batch.put(
            OPENIDHASH_TOKEN,
            &sha256_hex(token.as_bytes()),
            &Raw(serde_json::to_vec(&record)?),
        );
        // Expired tokens go when new ones are made, so none pile up.
        for (hash, Raw(bytes)) in self.db.scan_prefix(OPENIDHASH_TOKEN, b"")? {
            let expired = serde_json::from_slice::<OpenIdRecord>(&bytes)
                .map_or(true, |r| r.expires_ms <= now);
            if expired {
                batch.delete(OPENIDHASH_TOKEN, &hash);
            }
        }
        batch.commit()?;
        Ok(token)
    }

    /// The user an unexpired OpenID token belongs to.
    pub fn openid_user(&self, token: &str) -> Result<Option<OwnedUserId>> {
        let Some(Raw(bytes)) = self
            .db
            .get(OPENIDHASH_TOKEN, &sha256_hex(token.as_bytes()))?
        else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<OpenIdRecord>(&bytes)
            .ok()
            .filter(|r| r.expires_ms > now_ms())
            .map(|r| r.user))
    }
}
