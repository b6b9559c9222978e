//! Server-side key backup (`/room_keys`): versions of encrypted room-key
//! stores, each with an etag that changes whenever its keys change.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::{client::backup::KeyBackupData, error::ErrorKind},
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::E2ee;
use crate::{
    error::{Error, Result},
    storage::{
        Batch, JsonValue, Raw, USERIDVERSION_BACKUP, USERIDVERSIONROOMSESSION_BACKUPKEY, prefix,
    },
};

/// One backup version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// `{"algorithm": ..., "auth_data": ...}` as the client sent it.
    pub algorithm: Box<RawValue>,
    /// Bumped on every change of the version's keys.
    pub etag: u64,
    /// How many keys the version holds.
    pub count: u64,
}

impl JsonValue for BackupRecord {}

/// A version as `GET /room_keys/version` shows it.
#[derive(Debug)]
pub struct BackupInfo {
    pub version: String,
    pub algorithm: Box<RawValue>,
    pub etag: String,
    pub count: u64,
}

/// Keys of a version: room -> session id -> key data.
pub type BackupKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Box<RawValue>>>;

fn parse_version(version: &str) -> Result<u64> {
    version
        .parse()
        .map_err(|_| Error::not_found(format!("No backup version {version}")))
}

fn no_such_version(version: &str) -> Error {
    Error::not_found(format!("Unknown backup version {version}"))
}

/// The metadata that decides which of two copies of a session's key to keep.
#[derive(Deserialize)]
struct KeyRank {
    is_verified: bool,
    first_message_index: u64,
    forwarded_count: u64,
}

/// Whether `new` replaces `old` (spec: verified beats unverified, then the
/// lower first message index, then the lower forwarded count).
fn replaces(new: &KeyRank, old: &KeyRank) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

fn check_algorithm(algorithm: &RawValue) -> Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(algorithm.get())?;
    let ok = value.get("algorithm").is_some_and(|a| a.is_string())
        && value.get("auth_data").is_some_and(|a| a.is_object());
    if !ok {
        return Err(Error::bad_json(
            "A backup version needs a string `algorithm` and an object `auth_data`",
        ));
    }
    Ok(value)
}

impl E2ee {
    /// The newest version, if any.
    fn latest_version(&self, user: &UserId) -> Result<Option<(u64, BackupRecord)>> {
        let user_prefix = prefix(&(user.to_owned(),));
        let end = {
            let mut end = user_prefix.clone();
            end.extend_from_slice(&u64::MAX.to_be_bytes());
            end.push(0xFF);
            end
        };
        Ok(self
            .db
            .scan_rev(USERIDVERSION_BACKUP, &user_prefix, &end, 1)?
            .into_iter()
            .next()
            .map(|((_, v), r)| (v, r)))
    }

    fn version_record(&self, user: &UserId, version: &str) -> Result<(u64, BackupRecord)> {
        let number = parse_version(version)?;
        let record = self
            .db
            .get(USERIDVERSION_BACKUP, &(user.to_owned(), number))?
            .ok_or_else(|| no_such_version(version))?;
        Ok((number, record))
    }

    pub fn create_backup(&self, user: &UserId, algorithm: &RawValue) -> Result<String> {
        let value = check_algorithm(algorithm)?;
        let _guard = self.backup_lock.lock();
        let next = self.latest_version(user)?.map_or(1, |(v, _)| v + 1);
        let mut batch = self.db.batch();
        batch.put(
            USERIDVERSION_BACKUP,
            &(user.to_owned(), next),
            &BackupRecord {
                algorithm: serde_json::value::to_raw_value(&value)?,
                etag: 0,
                count: 0,
            },
        );
        batch.commit()?;
        Ok(next.to_string())
    }

    /// A version's info; the newest when `version` is `None`.
    pub fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let (number, record) = match version {
            Some(v) => self.version_record(user, v)?,
            None => self
                .latest_version(user)?
                .ok_or_else(|| Error::not_found("No key backup exists yet"))?,
        };
        Ok(BackupInfo {
            version: number.to_string(),
            algorithm: record.algorithm,
            etag: record.etag.to_string(),
            count: record.count,
        })
    }

    /// Replaces the version's `auth_data`; the algorithm cannot change.
    pub fn update_backup(&self, user: &UserId, version: &str, algorithm: &RawValue) -> Result<()> {
        let value = check_algorithm(algorithm)?;
        if let Some(named) = value.get("version")
            && named.as_str() != Some(version)
        {
            return Err(Error::invalid_param(
                "The version in the body does not match the one in the path",
            ));
        }
        let _guard = self.backup_lock.lock();
        let (number, mut record) = self.version_record(user, version)?;
        let old: serde_json::Value = serde_json::from_str(record.algorithm.get())?;
        if old.get("algorithm") != value.get("algorithm") {
            return Err(Error::invalid_param(
                "A backup version's algorithm cannot change; create a new version",
            ));
        }
        let mut stored = value;
        if let Some(object) = stored.as_object_mut() {
            object.remove("version");
        }
        record.algorithm = serde_json::value::to_raw_value(&stored)?;
        let mut batch = self.db.batch();
        batch.put(USERIDVERSION_BACKUP, &(user.to_owned(), number), &record);
        batch.commit()
    }

    /// Deletes a version and its keys.
    pub fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let _guard = self.backup_lock.lock();
        let (number, _) = self.version_record(user, version)?;
        let mut batch = self.db.batch();
        batch.delete(USERIDVERSION_BACKUP, &(user.to_owned(), number));
        batch.delete_prefix(
            USERIDVERSIONROOMSESSION_BACKUPKEY,
            &prefix(&(user.to_owned(), number)),
        )?;
        batch.commit()
    }

    /// Adds keys to the newest version (only); a stored key is replaced only
    /// by a better one. Returns the new (etag, count).
    pub fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: &BTreeMap<OwnedRoomId, BTreeMap<String, &RawValue>>,
    ) -> Result<(String, u64)> {
        let mut parsed = Vec::new();
        for (room, sessions) in keys {
            for (session, data) in sessions {
                serde_json::from_str::<KeyBackupData>(data.get()).map_err(|e| {
                    Error::bad_json(format!(
                        "The key of session {session} has the wrong shape: {e}"
                    ))
                })?;
                let rank: KeyRank = serde_json::from_str(data.get())?;
                parsed.push((room, session, rank, *data));
            }
        }
        let _guard = self.backup_lock.lock();
        let (number, mut record) = self.version_record(user, version)?;
        let latest = self.latest_version(user)?.map(|(v, _)| v);
        if latest != Some(number) {
            let current = latest.map(|v| v.to_string()).unwrap_or_default();
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::WrongRoomKeysVersion(
                    ruma::api::error::WrongRoomKeysVersionErrorData::new(current),
                ),
                format!(
                    "Keys can only be added to the current backup version, {version} is not it"
                ),
            ));
        }
        let mut batch = self.db.batch();
        let mut changed = false;
        for (room, session, rank, data) in parsed {
            let row = (user.to_owned(), number, room.clone(), session.clone());
            match self.db.get(USERIDVERSIONROOMSESSION_BACKUPKEY, &row)? {
                Some(Raw(old)) => {
                    let old: KeyRank = serde_json::from_slice(&old)?;
                    if !replaces(&rank, &old) {
                        continue;
                    }
                }
                None => record.count += 1,
            }
            batch.put(
                USERIDVERSIONROOMSESSION_BACKUPKEY,
                &row,
                &Raw(data.get().as_bytes().to_vec()),
            );
            changed = true;
        }
        if changed {
            record.etag += 1;
            batch.put(USERIDVERSION_BACKUP, &(user.to_owned(), number), &record);
            batch.commit()?;
        }
        Ok((record.etag.to_string(), record.count))
    }

    /// Keys of a version, all or of one room or one session.
    pub fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<BackupKeys> {
        let (number, _) = self.version_record(user, version)?;
        let mut out = BackupKeys::new();
        if let (Some(room), Some(session)) = (room, session) {
            let row = (user.to_owned(), number, room.to_owned(), session.to_owned());
            if let Some(Raw(data)) = self.db.get(USERIDVERSIONROOMSESSION_BACKUPKEY, &row)? {
                out.entry(room.to_owned())
                    .or_default()
                    .insert(session.to_owned(), raw_json(data)?);
            }
            return Ok(out);
        }
        let scan = match room {
            Some(room) => prefix(&(user.to_owned(), number, room.to_owned())),
            None => prefix(&(user.to_owned(), number)),
        };
        for row in self
            .db
            .iter(USERIDVERSIONROOMSESSION_BACKUPKEY, &scan, &scan, true)
        {
            let ((_, _, room, session), Raw(data)) = row?;
            out.entry(room)
                .or_default()
                .insert(session, raw_json(data)?);
        }
        Ok(out)
    }

    /// Deletes keys of a version: all, of one room or one session. Returns
    /// the new (etag, count).
    pub fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<(String, u64)> {
        let _guard = self.backup_lock.lock();
        let (number, mut record) = self.version_record(user, version)?;
        let mut batch = self.db.batch();
        let mut deleted = 0;
        if let (Some(room), Some(session)) = (room, session) {
            let row = (user.to_owned(), number, room.to_owned(), session.to_owned());
            if self.db.contains(USERIDVERSIONROOMSESSION_BACKUPKEY, &row)? {
                batch.delete(USERIDVERSIONROOMSESSION_BACKUPKEY, &row);
                deleted = 1;
            }
        } else {
            let scan = match room {
                Some(room) => prefix(&(user.to_owned(), number, room.to_owned())),
                None => prefix(&(user.to_owned(), number)),
            };
            deleted = stage_delete_counted(&mut batch, &self.db, &scan)?;
        }
        if deleted > 0 {
            record.count = record.count.saturating_sub(deleted);
            record.etag += 1;
            batch.put(USERIDVERSION_BACKUP, &(user.to_owned(), number), &record);
            batch.commit()?;
        }
        Ok((record.etag.to_string(), record.count))
    }
}

fn stage_delete_counted(
    batch: &mut Batch,
    db: &crate::storage::Engine,
    scan: &[u8],
) -> Result<u64> {
    let mut deleted = 0;
    for row in db.iter(USERIDVERSIONROOMSESSION_BACKUPKEY, scan, scan, true) {
        let (key, _) = row?;
        batch.delete(USERIDVERSIONROOMSESSION_BACKUPKEY, &key);
        deleted += 1;
    }
    Ok(deleted)
}

fn raw_json(data: Vec<u8>) -> Result<Box<RawValue>> {
    Ok(RawValue::from_string(
        String::from_utf8_lossy(&data).into_owned(),
    )?)
}
