//! Registration tokens (`m.login.registration_token`): created by the admin CLI,
//! limited in uses and optionally by an expiry time.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    storage::{Batch, Engine, JsonValue, REGTOKEN_INFO},
    util::{now_ms, random_string_from},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationToken {
    /// `None`: unlimited.
    pub uses_allowed: Option<u64>,
    pub completed: u64,
    /// Milliseconds since the epoch; `None`: never expires.
    pub expiry_time: Option<u64>,
}

impl JsonValue for RegistrationToken {}

/// The spec's token alphabet: `[A-Za-z0-9._~-]`, at most 64 characters.
pub fn is_valid_token_string(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

#[derive(Debug)]
pub struct RegistrationTokens {
    db: Engine,
    /// Uses reserved by registrations in progress (their token stage is done).
    pending: Mutex<HashMap<String, u64>>,
}

impl RegistrationTokens {
    pub fn new(db: Engine) -> Self {
        Self {
            db,
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn create(
        &self,
        token: Option<String>,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<String> {
        let token = match token {
            Some(t) if !is_valid_token_string(&t) => {
                return Err(Error::invalid_param(
                    "A registration token is 1-64 characters from A-Z, a-z, 0-9, '.', '_', '~' and '-'",
                ));
            }
            Some(t) => t,
            None => random_string_from(crate::util::ALPHANUMERIC, 16),
        };
        if self.db.get(REGTOKEN_INFO, &token)?.is_some() {
            return Err(Error::invalid_param(
                "That registration token already exists",
            ));
        }
        let mut batch = self.db.batch();
        batch.put(
            REGTOKEN_INFO,
            &token,
            &RegistrationToken {
                uses_allowed,
                completed: 0,
                expiry_time,
            },
        );
        batch.commit()?;
        Ok(token)
    }

    /// Whether a registration could use this token now.
    pub fn is_usable(&self, token: &str) -> Result<bool> {
        let Some(info) = self.db.get(REGTOKEN_INFO, &token.to_owned())? else {
            return Ok(false);
        };
        if info.expiry_time.is_some_and(|t| t <= now_ms()) {
            return Ok(false);
        }
        let pending = self.pending.lock().get(token).copied().unwrap_or(0);
        Ok(info
            .uses_allowed
            .is_none_or(|allowed| info.completed + pending < allowed))
    }

    /// Holds one use of the token for a registration in progress.
    pub fn reserve(&self, token: &str) -> Result<bool> {
        // Read and reserve under one lock, so concurrent registrations cannot
        // overrun the allowed uses. A registration commits its use before it
        // releases its reservation, so a use is never counted zero times.
        let mut pending = self.pending.lock();
        let Some(info) = self.db.get(REGTOKEN_INFO, &token.to_owned())? else {
            return Ok(false);
        };
        if info.expiry_time.is_some_and(|t| t <= now_ms()) {
            return Ok(false);
        }
        let held = pending.entry(token.to_owned()).or_default();
        if info
            .uses_allowed
            .is_some_and(|allowed| info.completed + *held >= allowed)
        {
            return Ok(false);
        }
        *held += 1;
        Ok(true)
    }

    /// Gives back a reserved use (the registration was abandoned).
    pub fn release(&self, token: &str) {
        let mut pending = self.pending.lock();
        if let Some(n) = pending.get_mut(token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(token);
            }
        }
    }

    /// Turns a reserved use into a completed one, in the registration's batch.
    pub fn complete(&self, batch: &mut Batch, token: &str) -> Result<()> {
        if let Some(mut info) = self.db.get(REGTOKEN_INFO, &token.to_owned())? {
            info.completed += 1;
            batch.put(REGTOKEN_INFO, &token.to_owned(), &info);
        }
        Ok(())
    }
}
