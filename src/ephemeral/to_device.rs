//! To-device messages: queued per device, delivered by sync, deleted once the
//! device acknowledges them (by syncing with a later token).

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
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
    /// Per device, what lets an acknowledgement skip its read when nothing
    /// is queued: every sync acknowledges, few devices get messages.
    tracked: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), Tracked>>,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// At or above the count of every message queued (noted before commit).
    queued_at_most: u64,
    /// Every message up to this count has been deleted.
    deleted_upto: u64,
}

/// Whom a message is for.
pub enum Target {
    Device(OwnedDeviceId),
    AllDevices,
}

impl ToDevice {
    pub fn new(db: Engine, users: Users) -> Self {
        Self {
            db,
            users,
            tracked: Mutex::default(),
        }
    }

    /// Notes a message staged at `count` for a device, before its batch commits.
    fn note_queued(&self, user: &UserId, device: &DeviceId, count: u64) {
        let mut tracked = self.tracked.lock();
        let entry = tracked
            .entry((user.to_owned(), device.to_owned()))
            .or_insert(Tracked {
                queued_at_most: 0,
                deleted_upto: 0,
            });
        entry.queued_at_most = entry.queued_at_most.max(count);
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
                self.note_queued(&user, &device, count);
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
        let key = (user.to_owned(), device.to_owned());
        let known = self.tracked.lock().get(&key).copied();
        if known.is_some_and(|t| t.queued_at_most <= t.deleted_upto) {
            return Ok(());
        }
        self.delete_acknowledged(user, device, upto)?;
        let mut tracked = self.tracked.lock();
        let entry = tracked.entry(key).or_insert(Tracked {
            // Messages queued before this entry existed (before a restart)
            // have counts below any handed out so far.
            queued_at_most: self.db.reserved_count(),
            deleted_upto: 0,
        });
        entry.deleted_upto = entry.deleted_upto.max(upto);
        Ok(())
    }

    fn delete_acknowledged(&self, user: &UserId, device: &DeviceId, upto: u64) -> Result<()> {
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
