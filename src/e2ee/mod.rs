//! End-to-end encryption: the server side of it. bigd never sees plaintext; it
//! stores device keys, one-time and fallback keys, cross-signing keys and
//! signatures, encrypted key backups and dehydrated devices, and tells the
//! users who share rooms when someone's keys change (`device_lists`).

mod backup;
mod changes;
mod dehydrated;
mod keys;
mod signatures;

use ruma::{OwnedUserId, UserId};

pub use self::{
    backup::{BackupInfo, BackupKeys, BackupRecord},
    changes::{DeviceListChanges, device_list_changes},
    dehydrated::{DehydratedRecord, NewDehydratedDevice},
    keys::{ClaimResult, FallbackKeyRecord, QueryResult, SigningKeysUpload},
};
use crate::{
    error::Result,
    storage::{Batch, COUNT_KEYCHANGEUSER, Engine, Raw, USERID_KEYCHANGECOUNT},
    users::Users,
};

#[derive(Debug)]
pub struct E2ee {
    db: Engine,
    users: Users,
    /// Serialises one-time key claims (read, then delete): two concurrent
    /// claims never hand out the same key.
    claim_lock: parking_lot::Mutex<()>,
    /// Serialises read-modify-writes of keys, signatures and dehydrated devices.
    keys_lock: parking_lot::Mutex<()>,
    /// Serialises key backup writes (versions, etags and counts).
    backup_lock: parking_lot::Mutex<()>,
}

impl E2ee {
    pub fn new(db: Engine, users: Users) -> Self {
        Self {
            db,
            users,
            claim_lock: Default::default(),
            keys_lock: Default::default(),
            backup_lock: Default::default(),
        }
    }
}

/// Records in `batch` that `user`'s devices or cross-signing keys changed, so
/// everyone sharing a room with them hears of it (`device_lists.changed`).
/// The feed keeps one entry per user: their latest change.
pub fn stage_key_change(db: &Engine, batch: &mut Batch, user: &UserId) -> Result<()> {
    let user = user.to_owned();
    if let Some(old) = db.get(USERID_KEYCHANGECOUNT, &user)? {
        batch.delete(COUNT_KEYCHANGEUSER, &old);
    }
    let count = batch.next_count()?;
    batch.put(USERID_KEYCHANGECOUNT, &user, &count);
    batch.put(
        COUNT_KEYCHANGEUSER,
        &count,
        &Raw(user.as_str().as_bytes().to_vec()),
    );
    Ok(())
}

/// Users whose keys changed in (after, upto].
fn key_changes_between(db: &Engine, after: u64, upto: u64) -> Result<Vec<OwnedUserId>> {
    use crate::storage::Key;
    let start = after.saturating_add(1).encode();
    let mut users = Vec::new();
    for row in db.iter(COUNT_KEYCHANGEUSER, &[], &start, true) {
        let (count, Raw(user)) = row?;
        if count > upto {
            break;
        }
        match OwnedUserId::try_from(String::from_utf8_lossy(&user).into_owned()) {
            Ok(user) => users.push(user),
            Err(e) => tracing::warn!(error = %e, "corrupt user id in the key change feed"),
        }
    }
    Ok(users)
}

/// The keys of a device that is going away (logout, deletion, a replaced
/// dehydrated device), staged in the caller's batch.
pub fn stage_delete_device(
    db: &Engine,
    batch: &mut Batch,
    user: &UserId,
    device: &ruma::DeviceId,
) -> Result<()> {
    keys::stage_delete_device_keys(batch, user, device)?;
    dehydrated::stage_forget_dehydrated(db, batch, user, device)?;
    stage_key_change(db, batch, user)
}

/// Everything kept for a deactivated account's encryption: cross-signing keys
/// (and signatures on them), key backups. Its devices (the dehydrated one
/// included) are deleted with its sessions.
pub fn stage_delete_user(db: &Engine, batch: &mut Batch, user: &UserId) -> Result<()> {
    use crate::storage::{
        USERIDKEYIDSIGNER_SIGNATURES, USERIDKIND_CROSSSIGNINGKEY, USERIDVERSION_BACKUP,
        USERIDVERSIONROOMSESSION_BACKUPKEY, prefix,
    };
    let user_prefix = prefix(&(user.to_owned(),));
    batch.delete_prefix(USERIDKIND_CROSSSIGNINGKEY, &user_prefix)?;
    batch.delete_prefix(USERIDKEYIDSIGNER_SIGNATURES, &user_prefix)?;
    batch.delete_prefix(USERIDVERSION_BACKUP, &user_prefix)?;
    batch.delete_prefix(USERIDVERSIONROOMSESSION_BACKUPKEY, &user_prefix)?;
    stage_key_change(db, batch, user)
}
