//! To-device messages: queued per device, delivered by sync, deleted once the
//! device acknowledges them (by syncing with a later token).

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde_json::{Value, json};

use crate::{
    error::Result,
    storage::{Engine, Key, Raw, USERIDDEVICECOUNT_TODEVICE, USERIDDEVICETXN_TODEVICE, prefix},
    users::Users,
};

#[derive(Debug)]
pub struct ToDevice {
    db: Engine,
    users: Users,
}

/// Whom a message is for.
pub enum Target {
    Device(OwnedDeviceId),
    AllDevices,
}

impl ToDevice {
    pub fn new(db: Engine, users: Users) -> Self {
        Self { db, users }
    }

    /// Queues messages in one batch; a repeated (sender, device, txn id) does nothing.
    pub fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        kind: &str,
        messages: Vec<(ruma::OwnedUserId, Target, Value)>,
    ) -> Result<()> {
        let txn_key = (
            sender.to_owned(),
            sender_device.to_owned(),
            txn_id.to_owned(),
        );
        if self.db.contains(USERIDDEVICETXN_TODEVICE, &txn_key)? {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for (user, target, content) in messages {
            // Remote users get theirs over federation, which comes later.
            if !self.users.is_local(&user) {
                continue;
            }
            let devices: Vec<OwnedDeviceId> = match target {
                Target::Device(device) => vec![device],
                Target::AllDevices => self
                    .users
                    .devices(&user)?
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect(),
            };
            let event =
                serde_json::to_vec(&json!({ "type": kind, "sender": sender, "content": content }))?;
            for device in devices {
                let count = batch.next_count()?;
                batch.put(
                    USERIDDEVICECOUNT_TODEVICE,
                    &(user.clone(), device, count),
                    &Raw(event.clone()),
                );
            }
        }
        batch.put(USERIDDEVICETXN_TODEVICE, &txn_key, &());
        batch.commit()
    }

    /// Messages for a device with counts in (after, upto], oldest first.
    pub fn pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Value>> {
        let device_prefix = prefix(&(user.to_owned(), device.to_owned()));
        let start = (user.to_owned(), device.to_owned(), after.saturating_add(1)).encode();
        let mut events = Vec::new();
        for row in self
            .db
            .iter(USERIDDEVICECOUNT_TODEVICE, &device_prefix, &start, true)
        {
            let ((_, _, count), Raw(event)) = row?;
            if count > upto {
                break;
            }
            events.push(serde_json::from_slice(&event)?);
        }
        Ok(events)
    }

    /// Deletes what the device has acknowledged: everything up to `upto`.
    pub fn acknowledge(&self, user: &UserId, device: &DeviceId, upto: u64) -> Result<()> {
        let device_prefix = prefix(&(user.to_owned(), device.to_owned()));
        let mut batch = self.db.batch();
        for row in self.db.iter(
            USERIDDEVICECOUNT_TODEVICE,
            &device_prefix,
            &device_prefix,
            true,
        ) {
            let ((u, d, count), _) = row?;
            if count > upto {
                break;
            }
            batch.delete(USERIDDEVICECOUNT_TODEVICE, &(u, d, count));
        }
        if !batch.is_empty() {
            batch.commit()?;
        }
        Ok(())
    }
}
