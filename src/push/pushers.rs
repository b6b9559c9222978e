//! Pushers: where a user's notifications go (HTTP push gateways).
//!
//! A pusher is identified by (user, app_id, pushkey). Unless set with
//! `append`, a pushkey belongs to one user: setting it removes the same
//! (app_id, pushkey) from every other user, as when a phone changes hands.
//! A pusher belongs to the device that set it and goes when that device logs
//! out. Removing a pusher drops what its outbox queue still holds.

use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    api::client::push::{Pusher, PusherKind},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    outbox::{self, Destination},
    storage::{
        APPIDPUSHKEYUSERID_, Batch, Engine, Raw, USERIDAPPIDPUSHKEY_PUSHER, WatchedCache, prefix,
    },
    util::now_ms,
};

/// The path every push gateway URL must end with (Push Gateway API).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// Longest `pushkey` the spec allows, in bytes.
const MAX_PUSHKEY: usize = 512;
/// Longest `app_id` the spec allows, in characters.
const MAX_APP_ID: usize = 64;

/// A stored pusher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    /// The pusher as the client set it.
    pub pusher: Pusher,
    /// The device that set it (its access token's device).
    pub device_id: Option<OwnedDeviceId>,
    /// When it was set (ms); gateways get it as `pushkey_ts` (s).
    pub created_ms: u64,
}

impl PusherRecord {
    /// The gateway URL of an http pusher.
    pub fn url(&self) -> Option<&str> {
        match &self.pusher.kind {
            PusherKind::Http(data) => Some(&data.url),
            _ => None,
        }
    }
}

/// The outbox destination of a user's pusher.
pub fn destination(user: &UserId, app_id: &str, pushkey: &str) -> Destination {
    Destination::Pusher {
        user: user.to_owned(),
        app_id: app_id.to_owned(),
        pushkey: pushkey.to_owned(),
    }
}

#[derive(Debug)]
pub struct Pushers {
    db: Engine,
    /// Each user's destinations with a watch on their pushers, registered
    /// before the read: every new event asks for every member's.
    destinations: WatchedCache<OwnedUserId, Vec<Destination>>,
}

/// Users whose pusher destinations are kept in memory.
const DESTINATIONS_CACHE: usize = 10_000;

impl Pushers {
    pub fn new(db: Engine) -> Self {
        Self {
            db,
            destinations: WatchedCache::new(DESTINATIONS_CACHE),
        }
    }

    pub fn list(&self, user: &UserId) -> Result<Vec<PusherRecord>> {
        list_of(&self.db, user)
    }

    pub fn get(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<Option<PusherRecord>> {
        let key = (user.to_owned(), app_id.to_owned(), pushkey.to_owned());
        Ok(self
            .db
            .get(USERIDAPPIDPUSHKEY_PUSHER, &key)?
            .and_then(|Raw(bytes)| decode(&bytes)))
    }

    /// The outbox destinations of a user's pushers.
    pub fn destinations(&self, user: &UserId) -> Result<Vec<Destination>> {
        // Asked for every notified member of every event: a hit builds nothing.
        let p = || prefix(&(user.to_owned(),));
        self.destinations.get_or_read(
            user,
            || self.db.watch(USERIDAPPIDPUSHKEY_PUSHER, p()),
            || {
                let p = p();
                let mut found = Vec::new();
                for row in self.db.iter(USERIDAPPIDPUSHKEY_PUSHER, &p, &p, true) {
                    let ((user, app_id, pushkey), _) = row?;
                    found.push(destination(&user, &app_id, &pushkey));
                }
                Ok(found)
            },
        )
    }

    /// Creates or replaces a pusher (`POST /pushers/set`).
    pub fn set(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        pusher: Pusher,
        append: bool,
    ) -> Result<()> {
        validate(&pusher)?;
        let (app_id, pushkey) = (pusher.ids.app_id.clone(), pusher.ids.pushkey.clone());
        let mut batch = self.db.batch();
        if !append {
            let owners = prefix(&(app_id.clone(), pushkey.clone()));
            for row in self.db.iter(APPIDPUSHKEYUSERID_, &owners, &owners, true) {
                let ((_, _, owner), ()) = row?;
                if owner != user {
                    stage_delete(&mut batch, &owner, &app_id, &pushkey)?;
                }
            }
        }
        let record = PusherRecord {
            pusher,
            device_id: device.map(ToOwned::to_owned),
            created_ms: now_ms(),
        };
        let key = (user.to_owned(), app_id.clone(), pushkey.clone());
        batch.put(
            USERIDAPPIDPUSHKEY_PUSHER,
            &key,
            &Raw(serde_json::to_vec(&record)?),
        );
        batch.put(
            APPIDPUSHKEYUSERID_,
            &(app_id, pushkey, user.to_owned()),
            &(),
        );
        batch.commit()
    }

    /// Deletes one pusher; deleting one that does not exist is not an error.
    pub fn delete(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        let mut batch = self.db.batch();
        stage_delete(&mut batch, user, app_id, pushkey)?;
        batch.commit()
    }

    /// Deletes the pushers a device set, in its logout batch.
    pub fn stage_delete_device(
        db: &Engine,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<()> {
        for record in list_of(db, user)? {
            if record.device_id.as_deref() == Some(device) {
                let ids = &record.pusher.ids;
                stage_delete(batch, user, &ids.app_id, &ids.pushkey)?;
            }
        }
        Ok(())
    }

    /// Deletes every pusher of a user (account deactivation).
    pub fn stage_delete_user(db: &Engine, batch: &mut Batch, user: &UserId) -> Result<()> {
        for record in list_of(db, user)? {
            let ids = &record.pusher.ids;
            stage_delete(batch, user, &ids.app_id, &ids.pushkey)?;
        }
        Ok(())
    }
}

fn stage_delete(batch: &mut Batch, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
    let owner: OwnedUserId = user.to_owned();
    batch.delete(
        USERIDAPPIDPUSHKEY_PUSHER,
        &(owner.clone(), app_id.to_owned(), pushkey.to_owned()),
    );
    batch.delete(
        APPIDPUSHKEYUSERID_,
        &(app_id.to_owned(), pushkey.to_owned(), owner),
    );
    outbox::stage_drop_queue(batch, &destination(user, app_id, pushkey))
}

fn decode(bytes: &[u8]) -> Option<PusherRecord> {
    match serde_json::from_slice(bytes) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable pusher record");
            None
        }
    }
}

/// What the spec requires of a pusher, and what bigd can deliver.
fn validate(pusher: &Pusher) -> Result<()> {
    let ids = &pusher.ids;
    if ids.pushkey.is_empty() || ids.pushkey.len() > MAX_PUSHKEY {
        return Err(Error::invalid_param(format!(
            "pushkey must be 1 to {MAX_PUSHKEY} bytes long"
        )));
    }
    if ids.app_id.is_empty() || ids.app_id.chars().count() > MAX_APP_ID {
        return Err(Error::invalid_param(format!(
            "app_id must be 1 to {MAX_APP_ID} characters long"
        )));
    }
    let PusherKind::Http(data) = &pusher.kind else {
        return Err(Error::invalid_param(
            "Only pushers of kind \"http\" are supported (kind null deletes a pusher)",
        ));
    };
    let url = reqwest::Url::parse(&data.url)
        .map_err(|e| Error::invalid_param(format!("data.url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::invalid_param(
            "data.url must be an http:// or https:// URL",
        ));
    }
    if url.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "data.url must have the path {NOTIFY_PATH}"
        )));
    }
    Ok(())
}

fn list_of(db: &Engine, user: &UserId) -> Result<Vec<PusherRecord>> {
    let rows = db.scan_prefix(USERIDAPPIDPUSHKEY_PUSHER, &prefix(&(user.to_owned(),)))?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, Raw(bytes))| decode(&bytes))
        .collect())
}
