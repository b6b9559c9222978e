//! Devices: what a user sees in their session list. Each device is backed by one
//! login session (see `auth`), created and deleted together with it.

use ruma::{OwnedDeviceId, UserId};
use serde::{Deserialize, Serialize};

use super::Users;
use crate::{
    error::Result,
    storage::{Batch, JsonValue, USERIDDEVICECOUNT_TODEVICE, USERIDDEVICEID_DEVICE, prefix},
    util::random_string_from,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ts: u64,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
    /// The login session whose access token acts for this device.
    pub session: u64,
}

impl JsonValue for DeviceRecord {}

/// Device ids like Synapse's: ten upper-case letters.
pub fn generate_device_id() -> OwnedDeviceId {
    random_string_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10).into()
}

impl Users {
    pub fn device(&self, user: &UserId, device: &ruma::DeviceId) -> Result<Option<DeviceRecord>> {
        self.db
            .get(USERIDDEVICEID_DEVICE, &(user.to_owned(), device.to_owned()))
    }

    pub fn devices(&self, user: &UserId) -> Result<Vec<(OwnedDeviceId, DeviceRecord)>> {
        let rows = self
            .db
            .scan_prefix(USERIDDEVICEID_DEVICE, &prefix(&(user.to_owned(),)))?;
        Ok(rows
            .into_iter()
            .map(|((_, device), record)| (device, record))
            .collect())
    }

    pub fn put_device(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &ruma::DeviceId,
        record: &DeviceRecord,
    ) {
        batch.put(
            USERIDDEVICEID_DEVICE,
            &(user.to_owned(), device.to_owned()),
            record,
        );
    }

    /// Deletes a device, its keys and what is queued for it.
    pub fn delete_device(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &ruma::DeviceId,
    ) -> Result<()> {
        batch.delete(USERIDDEVICEID_DEVICE, &(user.to_owned(), device.to_owned()));
        crate::push::pushers::Pushers::stage_delete_device(&self.db, batch, user, device)?;
        crate::e2ee::stage_delete_device(&self.db, batch, user, device)?;
        batch.delete_prefix(
            USERIDDEVICECOUNT_TODEVICE,
            &prefix(&(user.to_owned(), device.to_owned())),
        )
    }

    pub fn set_device_display_name(
        &self,
        user: &UserId,
        device: &ruma::DeviceId,
        display_name: Option<String>,
    ) -> Result<bool> {
        let _guard = self.device_lock();
        let Some(mut record) = self.device(user, device)? else {
            return Ok(false);
        };
        record.display_name = display_name;
        let mut batch = self.db.batch();
        self.put_device(&mut batch, user, device, &record);
        batch.commit()?;
        Ok(true)
    }

    /// Records where and when a device was last used. The caller holds `device_lock`.
    pub fn record_last_seen_locked(
        &self,
        user: &UserId,
        device: &ruma::DeviceId,
        ip: &str,
        ts: u64,
    ) -> Result<()> {
        let Some(mut record) = self.device(user, device)? else {
            return Ok(());
        };
        record.last_seen_ip = Some(ip.to_owned());
        record.last_seen_ts = Some(ts);
        let mut batch = self.db.batch();
        self.put_device(&mut batch, user, device, &record);
        batch.commit()
    }
}
