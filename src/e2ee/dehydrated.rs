//! Dehydrated devices (MSC3814): a device whose private keys the client stores
//! encrypted on the server, so messages sent while every real device was
//! offline can still be decrypted later. It is a device like any other for
//! other users (listed, with keys, receiving to-device messages) but has no
//! login session; its owner reads its to-device messages through `events`.

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{E2ee, stage_key_change};
use crate::{
    error::{Error, Result},
    storage::{Batch, Engine, JsonValue, USERID_DEHYDRATEDDEVICE},
    users::DeviceRecord,
    util::now_ms,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DehydratedRecord {
    pub device_id: OwnedDeviceId,
    /// The client's opaque `device_data`, kept as sent.
    pub device_data: Box<RawValue>,
}

impl JsonValue for DehydratedRecord {}

/// A dehydrated device to store.
#[derive(Debug)]
pub struct NewDehydratedDevice<'a> {
    pub device_id: &'a DeviceId,
    pub display_name: Option<String>,
    pub device_data: &'a RawValue,
    pub device_keys: &'a RawValue,
    pub one_time_keys: BTreeMap<String, &'a RawValue>,
    pub fallback_keys: BTreeMap<String, &'a RawValue>,
}

fn none_found() -> Error {
    Error::not_found("You have no dehydrated device")
}

impl E2ee {
    /// Stores a new dehydrated device, replacing the previous one (whose keys
    /// and queued messages go with it).
    pub fn put_dehydrated_device(&self, user: &UserId, new: NewDehydratedDevice<'_>) -> Result<()> {
        let upload = self.check_upload(
            user,
            new.device_id,
            Some(new.device_keys),
            &new.one_time_keys,
            &new.fallback_keys,
        )?;
        let _keys = self.keys_lock.lock();
        let previous = self.db.get(USERID_DEHYDRATEDDEVICE, &user.to_owned())?;
        let replacing_itself = previous
            .as_ref()
            .is_some_and(|p| p.device_id == new.device_id);
        if !replacing_itself && self.users.device(user, new.device_id)?.is_some() {
            return Err(Error::invalid_param(
                "That device id is taken by one of your devices; choose another for the dehydrated device",
            ));
        }
        let mut batch = self.db.batch();
        if let Some(previous) = &previous {
            self.users
                .delete_device(&mut batch, user, &previous.device_id)?;
        }
        self.users.put_device(
            &mut batch,
            user,
            new.device_id,
            &DeviceRecord {
                display_name: new.display_name,
                created_ts: now_ms(),
                last_seen_ip: None,
                last_seen_ts: None,
                // No login session acts for a dehydrated device.
                session: 0,
            },
        );
        // New keys replace any old ones wholesale: a dehydrated device put
        // again under the same id is a new device, not a change of identity keys.
        super::keys::stage_delete_device_keys(&mut batch, user, new.device_id)?;
        self.stage_upload(&mut batch, user, new.device_id, upload, true)?;
        batch.put(
            USERID_DEHYDRATEDDEVICE,
            &user.to_owned(),
            &DehydratedRecord {
                device_id: new.device_id.to_owned(),
                device_data: new.device_data.to_owned(),
            },
        );
        if previous.is_none() || replacing_itself {
            // (Deleting the previous device recorded the change already.)
            stage_key_change(&self.db, &mut batch, user)?;
        }
        let _devices = self.users.device_lock();
        batch.commit()
    }

    pub fn dehydrated_device(&self, user: &UserId) -> Result<DehydratedRecord> {
        self.db
            .get(USERID_DEHYDRATEDDEVICE, &user.to_owned())?
            .ok_or_else(none_found)
    }

    /// Deletes the dehydrated device; returns its id.
    pub fn delete_dehydrated_device(&self, user: &UserId) -> Result<OwnedDeviceId> {
        let _keys = self.keys_lock.lock();
        let record = self.dehydrated_device(user)?;
        let mut batch = self.db.batch();
        self.users
            .delete_device(&mut batch, user, &record.device_id)?;
        let _devices = self.users.device_lock();
        batch.commit()?;
        Ok(record.device_id)
    }

    /// Checks that `device` is the user's dehydrated device.
    pub fn require_dehydrated(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        if self.dehydrated_device(user)?.device_id != device {
            return Err(Error::not_found(format!(
                "{device} is not your dehydrated device"
            )));
        }
        Ok(())
    }
}

/// Part of deleting a device: forget it as the dehydrated device.
pub fn stage_forget_dehydrated(
    db: &Engine,
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
) -> Result<()> {
    if db
        .get(USERID_DEHYDRATEDDEVICE, &user.to_owned())?
        .is_some_and(|r| r.device_id == device)
    {
        batch.delete(USERID_DEHYDRATEDDEVICE, &user.to_owned());
    }
    Ok(())
}
