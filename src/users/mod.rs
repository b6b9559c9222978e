//! Accounts, profiles, devices, account data and filters.

mod account_data;
mod devices;
mod openid;
pub use self::openid::OPENID_LIFETIME;
mod profile;
mod threepids;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

pub use self::{
    account_data::{AccountDataChange, AccountDataEntry},
    devices::{DeviceRecord, generate_device_id},
    profile::{MAX_PROFILE_BYTES, MAX_PROFILE_KEY_BYTES},
    threepids::{BoundNumber, ThreepidRecord},
};
use crate::{
    auth::password,
    error::{Error, Result},
    storage::{Batch, Engine, JsonValue, Raw, USERID_ACCOUNT, USERIDFILTERID_FILTER, prefix},
    util::now_ms,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    /// argon2id PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub created_ts: u64,
    /// A deactivated account keeps its record so its localpart is never reused.
    #[serde(default)]
    pub deactivated: bool,
}

impl JsonValue for AccountRecord {}

#[derive(Clone, Debug)]
pub struct Users {
    db: Engine,
    server_name: ruma::OwnedServerName,
    /// Serialises every read-modify-write of devices and sessions with the
    /// commits that delete them, so a stale write never resurrects a device.
    device_lock: std::sync::Arc<parking_lot::Mutex<()>>,
    /// Serialises read-modify-write updates of account data (room tags).
    account_data_lock: std::sync::Arc<parking_lot::Mutex<()>>,
    passwords: std::sync::Arc<password::Passwords>,
}

impl Users {
    pub fn new(db: Engine, server_name: ruma::OwnedServerName) -> Self {
        Self {
            db,
            server_name,
            device_lock: Default::default(),
            account_data_lock: Default::default(),
            passwords: Default::default(),
        }
    }

    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn account(&self, user: &UserId) -> Result<Option<AccountRecord>> {
        self.db.get(USERID_ACCOUNT, &user.to_owned())
    }

    /// True for a local account that exists and is not deactivated.
    pub fn is_active(&self, user: &UserId) -> Result<bool> {
        Ok(self.account(user)?.is_some_and(|a| !a.deactivated))
    }

    /// Writes a new account into `batch`. The caller holds the registration lock,
    /// so the existence check and the write cannot interleave with another registration.
    pub fn create(
        &self,
        batch: &mut Batch,
        user: &UserId,
        password_hash: Option<String>,
        displayname: Option<&str>,
    ) -> Result<()> {
        if self.account(user)?.is_some() {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UserInUse,
                "That user id is taken",
            ));
        }
        let record = AccountRecord {
            password_hash,
            created_ts: now_ms(),
            deactivated: false,
        };
        batch.put(USERID_ACCOUNT, &user.to_owned(), &record);
        if let Some(name) = displayname {
            profile::put_field(batch, user, "displayname", &serde_json::Value::from(name));
        }
        Ok(())
    }

    /// Checks a password against the stored hash (argon2 runs off the async threads).
    pub async fn check_password(&self, user: &UserId, password: &str) -> Result<bool> {
        let Some(account) = self.account(user)? else {
            return Ok(false);
        };
        let Some(hash) = account.password_hash.filter(|_| !account.deactivated) else {
            return Ok(false);
        };
        self.passwords.verify(password.to_owned(), hash).await
    }

    pub fn set_password_hash(&self, batch: &mut Batch, user: &UserId, hash: String) -> Result<()> {
        let mut account = self
            .account(user)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        account.password_hash = Some(hash);
        batch.put(USERID_ACCOUNT, &user.to_owned(), &account);
        Ok(())
    }

    /// Marks the account deactivated, forgets its password and clears its profile.
    /// Devices and sessions are removed by the caller in the same batch.
    pub fn deactivate(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        let mut account = self
            .account(user)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        account.deactivated = true;
        account.password_hash = None;
        batch.put(USERID_ACCOUNT, &user.to_owned(), &account);
        profile::clear(batch, user)
    }

    /// Every local account id (for admin tools).
    pub fn all_local_users(&self) -> Result<Vec<OwnedUserId>> {
        Ok(self
            .db
            .scan_prefix(USERID_ACCOUNT, b"")?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    // --- filters ---

    /// Stores a filter exactly as the client sent it; returns its id.
    pub fn create_filter(&self, user: &UserId, json: &[u8]) -> Result<u64> {
        let mut batch = self.db.batch();
        let id = batch.next_count()?;
        batch.put(
            USERIDFILTERID_FILTER,
            &(user.to_owned(), id),
            &Raw(json.to_vec()),
        );
        batch.commit()?;
        Ok(id)
    }

    pub fn filter(&self, user: &UserId, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get(USERIDFILTERID_FILTER, &(user.to_owned(), id))?
            .map(|r| r.0))
    }

    /// Deletes everything stored per user that has no use once the account is gone.
    pub fn delete_private_data(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        batch.delete_prefix(USERIDFILTERID_FILTER, &prefix(&(user.to_owned(),)))?;
        crate::contacts::stage_delete_user(&self.db, batch, user)?;
        crate::e2ee::stage_delete_user(&self.db, batch, user)
    }

    /// Held while reading and rewriting a device or session, and while committing
    /// a batch that deletes one.
    pub fn device_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.device_lock.lock()
    }

    /// Held while an account data entry is read, changed and written back.
    pub fn account_data_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.account_data_lock.lock()
    }

    /// Password hashing, bounded in concurrency.
    pub fn passwords(&self) -> &password::Passwords {
        &self.passwords
    }

    pub fn db(&self) -> &Engine {
        &self.db
    }
}
