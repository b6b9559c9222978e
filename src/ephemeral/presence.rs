//! Presence: online, unavailable (idle), offline, the status message and when a
//! user was last active. Set explicitly or by syncing; shown state moves to
//! `unavailable` after `idle_timeout_ms` without activity and to `offline` when
//! no device has synced for `offline_timeout_ms`. Records are persisted (so a
//! restart keeps "last seen"); every change of what others see takes a count in
//! a change feed, so sync delivers it and waiting syncs wake.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    config::PresenceConfig,
    error::{Error, Result},
    storage::{COUNT_PRESENCEUSER, Engine, Raw, USERID_PRESENCE},
    util::now_ms,
};

/// Sync only rewrites a record this often when nothing visible changed.
const SYNC_WRITE_INTERVAL_MS: u64 = 10_000;
/// How often shown states are re-evaluated (idle and offline transitions).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// What the user (or their syncing) set: online, unavailable or offline.
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    pub last_sync_ts: u64,
    /// The state others were last shown, and the feed count of that change.
    pub shown: String,
    pub count: u64,
}

#[derive(Debug)]
pub struct Presence {
    db: Engine,
    config: PresenceConfig,
    records: Mutex<HashMap<OwnedUserId, PresenceRecord>>,
    /// Held from reading a record to writing it back, so that a sweep, a
    /// sync and an explicit status change never overwrite each other.
    updates: Mutex<()>,
}

pub fn is_valid_state(state: &str) -> bool {
    matches!(state, "online" | "unavailable" | "offline")
}

impl Presence {
    /// Loads the users not shown offline (they may need a transition).
    pub fn new(db: Engine, config: PresenceConfig) -> Result<Arc<Self>> {
        let mut records = HashMap::new();
        for (user, Raw(bytes)) in db.scan_prefix(USERID_PRESENCE, b"")? {
            let record: PresenceRecord = serde_json::from_slice(&bytes)?;
            if record.shown != "offline" {
                records.insert(user, record);
            }
        }
        Ok(Arc::new(Self {
            db,
            config,
            updates: Mutex::new(()),
            records: Mutex::new(records),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Re-evaluates shown states every second until the service is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let me: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(presence) = me.upgrade() else { return };
                if let Err(e) = presence.sweep() {
                    tracing::warn!(error = %e, "presence sweep failed");
                }
            }
        });
    }

    fn record(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        if let Some(record) = self.records.lock().get(user) {
            return Ok(Some(record.clone()));
        }
        match self.db.get(USERID_PRESENCE, &user.to_owned())? {
            Some(Raw(bytes)) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// What others see, now.
    fn shown(&self, record: &PresenceRecord, now: u64) -> &'static str {
        let since_active = now.saturating_sub(record.last_active_ts);
        let since_sync = now.saturating_sub(record.last_sync_ts);
        let offline_after = self.config.offline_timeout_ms;
        if record.state == "offline" || (since_sync > offline_after && since_active > offline_after)
        {
            "offline"
        } else if record.state == "unavailable" || since_active > self.config.idle_timeout_ms {
            "unavailable"
        } else {
            "online"
        }
    }

    /// `PUT /presence/{userId}/status`.
    pub fn set(&self, user: &UserId, state: &str, status_msg: Option<String>) -> Result<()> {
        if !is_valid_state(state) {
            return Err(Error::invalid_param(format!(
                "'{state}' is not a presence state"
            )));
        }
        let _update = self.updates.lock();
        let now = now_ms();
        let mut record = self.record(user)?.unwrap_or_else(|| blank(now));
        record.state = state.to_owned();
        record.status_msg = status_msg;
        if state != "offline" {
            record.last_active_ts = now;
        }
        self.publish(user, record, true)
    }

    /// A device of the user synced, with `set_presence` (default online).
    pub fn synced(&self, user: &UserId, set_presence: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let set_presence = if is_valid_state(set_presence) {
            set_presence
        } else {
            "online"
        };
        let _update = self.updates.lock();
        let now = now_ms();
        let existing = self.record(user)?;
        let mut record = existing.clone().unwrap_or_else(|| blank(now));
        record.last_sync_ts = now;
        match set_presence {
            "offline" => {}
            state => {
                // Syncing as online is activity; a state the user chose otherwise stays.
                if state == "online" {
                    record.last_active_ts = now;
                    if record.state == "offline" {
                        record.state = "online".into();
                    }
                } else if record.state != state {
                    record.state = state.to_owned();
                }
            }
        }
        let stale = existing
            .as_ref()
            .is_none_or(|e| now.saturating_sub(e.last_sync_ts) > SYNC_WRITE_INTERVAL_MS);
        let visible_change = existing
            .as_ref()
            .is_none_or(|e| self.shown(&record, now) != e.shown);
        if visible_change {
            self.publish(user, record, false)
        } else {
            // Keep the in-memory record current; persist now and then.
            self.records.lock().insert(user.to_owned(), record.clone());
            if stale {
                self.persist(user, &record)
            } else {
                Ok(())
            }
        }
    }

    fn persist(&self, user: &UserId, record: &PresenceRecord) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(
            USERID_PRESENCE,
            &user.to_owned(),
            &Raw(serde_json::to_vec(record)?),
        );
        batch.commit()
    }

    /// Writes a change others see: a new feed entry, the record, the cache.
    fn publish(&self, user: &UserId, mut record: PresenceRecord, force: bool) -> Result<()> {
        let now = now_ms();
        let shown = self.shown(&record, now);
        if !force && shown == record.shown && record.count != 0 {
            return self.persist(user, &record);
        }
        let mut batch = self.db.batch();
        if record.count != 0 {
            batch.delete(COUNT_PRESENCEUSER, &record.count);
        }
        record.count = batch.next_count()?;
        record.shown = shown.to_owned();
        batch.put(
            COUNT_PRESENCEUSER,
            &record.count,
            &Raw(user.as_bytes().to_vec()),
        );
        batch.put(
            USERID_PRESENCE,
            &user.to_owned(),
            &Raw(serde_json::to_vec(&record)?),
        );
        let mut records = self.records.lock();
        batch.commit()?;
        if shown == "offline" {
            records.remove(user);
        } else {
            records.insert(user.to_owned(), record);
        }
        Ok(())
    }

    /// Publishes idle and offline transitions that happened with time.
    fn sweep(&self) -> Result<()> {
        let now = now_ms();
        let due: Vec<OwnedUserId> = self
            .records
            .lock()
            .iter()
            .filter(|(_, r)| self.shown(r, now) != r.shown)
            .map(|(u, _)| u.clone())
            .collect();
        for user in due {
            // Re-read under the lock: a sync or a status change may have come since.
            let _update = self.updates.lock();
            if let Some(record) = self.record(&user)?
                && self.shown(&record, now_ms()) != record.shown
            {
                self.publish(&user, record, false)?;
            }
        }
        Ok(())
    }

    /// Users whose shown presence changed in (after, upto].
    pub fn changed_between(&self, after: u64, upto: u64) -> Result<Vec<OwnedUserId>> {
        use crate::storage::Key;
        let mut users = Vec::new();
        for row in self.db.iter(
            COUNT_PRESENCEUSER,
            b"",
            &after.saturating_add(1).encode(),
            true,
        ) {
            let (count, Raw(user)) = row?;
            if count > upto {
                break;
            }
            if let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&user).into_owned()) {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// The content of a user's `m.presence` event (`None` if never seen).
    pub fn content(&self, user: &UserId) -> Result<Option<Value>> {
        let Some(record) = self.record(user)? else {
            return Ok(None);
        };
        let now = now_ms();
        let shown = self.shown(&record, now);
        let mut content = json!({
            "presence": shown,
            "last_active_ago": now.saturating_sub(record.last_active_ts),
            "currently_active": shown == "online",
        });
        if let Some(msg) = &record.status_msg {
            content["status_msg"] = json!(msg);
        }
        Ok(Some(content))
    }

    /// The user's `m.presence` content with `last_active_ts` (when they were
    /// last active, in ms since the epoch), from one read of their record;
    /// `None` if never seen.
    pub fn last_seen(&self, user: &UserId) -> Result<Option<Value>> {
        let Some(record) = self.record(user)? else {
            return Ok(None);
        };
        let now = now_ms();
        let shown = self.shown(&record, now);
        let mut content = json!({
            "presence": shown,
            "last_active_ts": record.last_active_ts,
            "last_active_ago": now.saturating_sub(record.last_active_ts),
            "currently_active": shown == "online",
        });
        if let Some(msg) = &record.status_msg {
            content["status_msg"] = json!(msg);
        }
        Ok(Some(content))
    }
}

fn blank(now: u64) -> PresenceRecord {
    PresenceRecord {
        state: "offline".into(),
        status_msg: None,
        last_active_ts: now,
        last_sync_ts: 0,
        shown: "offline".into(),
        count: 0,
    }
}
