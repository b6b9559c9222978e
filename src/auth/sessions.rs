//! Login sessions and their tokens.
//!
//! An access token is a JWT (HS256 with a key kept in the data folder) naming the
//! user, device, session and refresh generation. Verifying it needs no database
//! read: the signature proves it was issued here, and the in-memory session table
//! (loaded at start, updated after every commit) says whether the session still
//! exists, so a logged-out device's token fails at once. Tokens verified
//! recently are remembered with their claims, so that a client's every request
//! does not check the same signature again.
//!
//! Refresh tokens are opaque, stored as SHA-256 hashes, and rotated on every use.
//! Each rotation starts a new generation. Presenting an older refresh token again
//! revokes the whole session (RFC 6819 reuse detection), with one exception the
//! spec asks for: the previous token still works while the pair that replaced it
//! has not been used yet, so a client that lost the response can retry.

use std::{collections::HashMap, num::NonZeroUsize, path::Path, time::Duration};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    storage::{Batch, JsonValue, REFRESHHASH_REFRESH, SESSIONID_SESSION},
    users::{DeviceRecord, Users, generate_device_id},
    util::{now_ms, random_bytes, sha256_hex},
};

/// How many spent refresh-token hashes a session remembers for reuse detection.
const SPENT_REFRESH_MEMORY: usize = 32;
/// Last-seen data is written at most this often per device (unless the IP changes).
const LAST_SEEN_WRITE_INTERVAL_MS: u64 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub refreshable: bool,
    pub generation: u64,
    pub generation_used: bool,
    /// Hashes of this session's refresh tokens, oldest first (bounded).
    #[serde(default)]
    pub refresh_hashes: Vec<String>,
}

impl JsonValue for SessionRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub session: u64,
    pub generation: u64,
}

impl JsonValue for RefreshRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    dev: String,
    sid: u64,
    generation: u64,
    iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub session: u64,
}

/// What a successful login, registration or refresh hands to the client.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
}

/// A session written into a batch; `Sessions::commit_login` makes it live.
#[must_use = "commit the batch with Sessions::commit_login"]
pub struct StagedSession {
    id: u64,
    record: SessionRecord,
}

#[derive(Debug)]
struct Live {
    record: SessionRecord,
    last_seen_ip: Option<String>,
    last_seen_written_ms: u64,
}

pub struct Sessions {
    users: Users,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_lifetime: Duration,
    live: RwLock<HashMap<u64, Live>>,
    /// Tokens whose signature has been checked, with their claims: checking
    /// the HMAC was most of authenticating a request, and a client sends
    /// the same token with every one. Whether the session still exists is
    /// checked on every request all the same.
    verified: Mutex<LruCache<String, Claims>>,
}

/// Tokens kept in `Sessions::verified`.
const VERIFIED_TOKENS: usize = 16_384;

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// Loads the token signing key from `path`, creating it on first start.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| {
                    Error::internal(format!("{} is not valid base64: {e}", path.display()))
                });
        }
        // Only a missing key is created: replacing an unreadable one would log everyone out.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::internal(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    }
    let key = random_bytes::<64>().to_vec();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&key);
    crate::util::write_private_file(path, encoded.as_bytes())?;
    Ok(key)
}

impl Sessions {
    pub fn load(users: Users, key: &[u8], access_lifetime: Duration) -> Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let mut live = HashMap::new();
        for (id, record) in users.db().scan_prefix(SESSIONID_SESSION, b"")? {
            live.insert(
                id,
                Live {
                    record,
                    last_seen_ip: None,
                    last_seen_written_ms: 0,
                },
            );
        }
        Ok(Self {
            users,
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            access_lifetime,
            live: RwLock::new(live),
            verified: Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_TOKENS).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// The claims of a token verified before and not expired since (`None`:
    /// verify it, which also tells an expired token from a forged one).
    fn verified_claims(&self, token: &str) -> Option<Claims> {
        let claims = self.verified.lock().get(token).cloned()?;
        let now = now_ms() / 1000;
        claims.exp.is_none_or(|exp| exp > now).then_some(claims)
    }

    /// Checks a token's signature and expiry; remembers the claims of a good one.
    fn verify(&self, token: &str) -> Result<Claims> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                self.verified
                    .lock()
                    .put(token.to_owned(), data.claims.clone());
                Ok(data.claims)
            }
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                // Expired: a soft logout only if the session still exists.
                let mut ignoring_expiry = self.validation.clone();
                ignoring_expiry.validate_exp = false;
                let alive = jsonwebtoken::decode::<Claims>(token, &self.decoding, &ignoring_expiry)
                    .is_ok_and(|d| self.live.read().contains_key(&d.claims.sid));
                Err(Error::unknown_token(
                    alive,
                    "The access token has expired; use your refresh token or log in again",
                ))
            }
            Err(_) => Err(Error::unknown_token(false, "Unrecognised access token")),
        }
    }

    /// Verifies an access token and records the device as seen from `ip`.
    pub fn authenticate(&self, token: &str, ip: &str) -> Result<Identity> {
        let claims = match self.verified_claims(token) {
            Some(claims) => claims,
            None => self.verify(token)?,
        };
        let now = now_ms();
        let (identity, persist_generation, write_last_seen) = {
            let live = self.live.read();
            let session = live.get(&claims.sid).ok_or_else(|| {
                Error::unknown_token(
                    false,
                    "This access token was revoked: the device has been logged out",
                )
            })?;
            let r = &session.record;
            if r.user_id.as_str() != claims.sub || r.device_id.as_str() != claims.dev {
                return Err(Error::unknown_token(false, "Unrecognised access token"));
            }
            let current = claims.generation == r.generation;
            let previous_still_valid = claims.generation + 1 == r.generation && !r.generation_used;
            if !current && !previous_still_valid {
                return Err(Error::unknown_token(
                    true,
                    "This access token was replaced by a refresh; use the newer one",
                ));
            }
            let write_last_seen = session.last_seen_ip.as_deref() != Some(ip)
                || now.saturating_sub(session.last_seen_written_ms) > LAST_SEEN_WRITE_INTERVAL_MS;
            (
                Identity {
                    user_id: r.user_id.clone(),
                    device_id: r.device_id.clone(),
                    session: claims.sid,
                },
                current && !r.generation_used,
                write_last_seen,
            )
        };
        if persist_generation {
            self.mark_generation_used(claims.sid)?;
        }
        if write_last_seen {
            let _guard = self.users.device_lock();
            // A device logged out meanwhile must not be written back.
            let still_live = match self.live.write().get_mut(&claims.sid) {
                Some(s) => {
                    s.last_seen_ip = Some(ip.to_owned());
                    s.last_seen_written_ms = now;
                    true
                }
                None => false,
            };
            if still_live {
                self.users.record_last_seen_locked(
                    &identity.user_id,
                    &identity.device_id,
                    ip,
                    now,
                )?;
            }
        }
        Ok(identity)
    }

    /// The first use of a new token pair retires the previous refresh token for good.
    fn mark_generation_used(&self, sid: u64) -> Result<()> {
        let _guard = self.users.device_lock();
        let record = {
            let mut live = self.live.write();
            let Some(s) = live.get_mut(&sid) else {
                return Ok(());
            };
            if s.record.generation_used {
                return Ok(());
            }
            s.record.generation_used = true;
            s.record.clone()
        };
        let mut batch = self.users.db().batch();
        batch.put(SESSIONID_SESSION, &sid, &record);
        batch.commit()
    }

    /// Writes a device and its session into `batch`. A `device_id` the user already
    /// has is taken over: its old session is revoked, its display name kept.
    pub fn stage_login(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        refreshable: bool,
    ) -> Result<(IssuedTokens, StagedSession, Option<u64>)> {
        let device_id = device_id.unwrap_or_else(generate_device_id);
        let existing = self.users.device(user, &device_id)?;
        let replaced = existing.as_ref().map(|d| d.session);
        if let Some(old) = replaced {
            self.stage_delete_session(batch, old)?;
        }
        let id = self.new_session_id();
        let device = DeviceRecord {
            display_name: display_name
                .or_else(|| existing.as_ref().and_then(|d| d.display_name.clone())),
            created_ts: existing.as_ref().map_or_else(now_ms, |d| d.created_ts),
            last_seen_ip: existing.as_ref().and_then(|d| d.last_seen_ip.clone()),
            last_seen_ts: existing.as_ref().and_then(|d| d.last_seen_ts),
            session: id,
        };
        self.users.put_device(batch, user, &device_id, &device);
        let mut record = SessionRecord {
            user_id: user.to_owned(),
            device_id: device_id.clone(),
            refreshable,
            generation: 0,
            generation_used: false,
            refresh_hashes: Vec::new(),
        };
        let refresh_token = refreshable.then(|| self.stage_refresh_token(batch, id, &mut record));
        batch.put(SESSIONID_SESSION, &id, &record);
        let tokens = IssuedTokens {
            user_id: user.to_owned(),
            device_id,
            access_token: self.access_token(id, &record)?,
            refresh_token,
            expires_in: refreshable.then_some(self.access_lifetime),
        };
        Ok((tokens, StagedSession { id, record }, replaced))
    }

    /// Commits a batch holding a staged login and makes the session live
    /// (forgetting the one it replaced, if any).
    pub fn commit_login(
        &self,
        batch: Batch,
        staged: StagedSession,
        replaced: Option<u64>,
    ) -> Result<()> {
        let _guard = self.users.device_lock();
        batch.commit()?;
        let mut live = self.live.write();
        if let Some(old) = replaced {
            live.remove(&old);
        }
        live.insert(
            staged.id,
            Live {
                record: staged.record,
                last_seen_ip: None,
                last_seen_written_ms: 0,
            },
        );
        Ok(())
    }

    /// Exchanges a refresh token for a new token pair.
    pub fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens> {
        let guard = self.users.device_lock();
        let hash = sha256_hex(refresh_token.as_bytes());
        let unknown = || Error::unknown_token(false, "Unrecognised refresh token");
        let presented = self
            .users
            .db()
            .get(REFRESHHASH_REFRESH, &hash)?
            .ok_or_else(unknown)?;
        let mut record = {
            let live = self.live.read();
            live.get(&presented.session)
                .ok_or_else(unknown)?
                .record
                .clone()
        };
        let current = presented.generation == record.generation;
        let retry_of_previous =
            presented.generation + 1 == record.generation && !record.generation_used;
        if !current && !retry_of_previous {
            tracing::warn!(user = %record.user_id, device = %record.device_id, "spent refresh token reused; revoking the session");
            drop(guard);
            self.logout_device(&record.user_id, &record.device_id)?;
            return Err(Error::unknown_token(
                false,
                "This refresh token was already used; the session has been revoked for safety",
            ));
        }
        let mut batch = self.users.db().batch();
        record.generation += 1;
        record.generation_used = false;
        let refresh_token = self.stage_refresh_token(&mut batch, presented.session, &mut record);
        batch.put(SESSIONID_SESSION, &presented.session, &record);
        batch.commit()?;
        let tokens = IssuedTokens {
            user_id: record.user_id.clone(),
            device_id: record.device_id.clone(),
            access_token: self.access_token(presented.session, &record)?,
            refresh_token: Some(refresh_token),
            expires_in: Some(self.access_lifetime),
        };
        if let Some(s) = self.live.write().get_mut(&presented.session) {
            s.record = record;
        }
        Ok(tokens)
    }

    /// Logs a device out: deletes it, its session and its refresh tokens.
    /// Returns false if the user has no such device.
    pub fn logout_device(&self, user: &UserId, device: &DeviceId) -> Result<bool> {
        let mut batch = self.users.db().batch();
        let Some(session) = self.stage_logout_device(&mut batch, user, device)? else {
            return Ok(false);
        };
        self.commit_logout(batch, vec![session])?;
        Ok(true)
    }

    /// Adds a device logout to `batch`; returns the session to `forget` after commit.
    pub fn stage_logout_device(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<u64>> {
        let Some(record) = self.users.device(user, device)? else {
            return Ok(None);
        };
        self.users.delete_device(batch, user, device)?;
        self.stage_delete_session(batch, record.session)?;
        Ok(Some(record.session))
    }

    /// Adds the logout of every device of `user` except `keep` to `batch`.
    pub fn stage_logout_all(
        &self,
        batch: &mut Batch,
        user: &UserId,
        keep: Option<&DeviceId>,
    ) -> Result<Vec<u64>> {
        let mut sessions = Vec::new();
        for (device, _) in self.users.devices(user)? {
            if Some(device.as_ref()) != keep {
                sessions.extend(self.stage_logout_device(batch, user, &device)?);
            }
        }
        Ok(sessions)
    }

    /// Commits a batch that deleted `sessions` and drops them from memory, so
    /// their tokens fail from now on.
    pub fn commit_logout(&self, batch: Batch, sessions: Vec<u64>) -> Result<()> {
        let _guard = self.users.device_lock();
        batch.commit()?;
        let mut live = self.live.write();
        for s in sessions {
            live.remove(&s);
        }
        Ok(())
    }

    fn stage_delete_session(&self, batch: &mut Batch, session: u64) -> Result<()> {
        if let Some(record) = self.users.db().get(SESSIONID_SESSION, &session)? {
            for hash in &record.refresh_hashes {
                batch.delete(REFRESHHASH_REFRESH, hash);
            }
        }
        batch.delete(SESSIONID_SESSION, &session);
        Ok(())
    }

    fn stage_refresh_token(
        &self,
        batch: &mut Batch,
        session: u64,
        record: &mut SessionRecord,
    ) -> String {
        let token = format!(
            "bigd_r_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        );
        let hash = sha256_hex(token.as_bytes());
        batch.put(
            REFRESHHASH_REFRESH,
            &hash,
            &RefreshRecord {
                session,
                generation: record.generation,
            },
        );
        record.refresh_hashes.push(hash);
        while record.refresh_hashes.len() > SPENT_REFRESH_MEMORY {
            let oldest = record.refresh_hashes.remove(0);
            batch.delete(REFRESHHASH_REFRESH, &oldest);
        }
        token
    }

    fn access_token(&self, sid: u64, record: &SessionRecord) -> Result<String> {
        let now_s = now_ms() / 1000;
        let claims = Claims {
            sub: record.user_id.to_string(),
            dev: record.device_id.to_string(),
            sid,
            generation: record.generation,
            iat: now_s,
            exp: record
                .refreshable
                .then(|| now_s + self.access_lifetime.as_secs().max(1)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::internal(format!("cannot sign an access token: {e}")))
    }

    fn new_session_id(&self) -> u64 {
        let live = self.live.read();
        loop {
            let id = u64::from_be_bytes(random_bytes::<8>());
            if id != 0 && !live.contains_key(&id) {
                return id;
            }
        }
    }
}
