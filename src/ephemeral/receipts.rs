//! Read receipts (`m.read`, `m.read.private`, threaded ones): the latest per
//! (room, type, user, thread), with a change feed by count for sync. And
//! delivered receipts (`ai.iambig.delivered`, see `delivered.rs`): the latest
//! per (room, receiving user, sender), with a change feed per sender, since
//! only the sender of a message needs to know it arrived.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    storage::{
        Engine, Key, Raw, SHORTROOMIDCOUNT_RECEIPTKEY, SHORTROOMIDTYPEUSERTHREAD_RECEIPT,
        SHORTROOMIDUSERSENDER_DELIVERED, USERIDSHORTROOMIDCOUNT_DELIVERED, prefix,
    },
    util::now_ms,
};

#[derive(Debug)]
pub struct Receipts {
    db: Engine,
    /// Held from reading a delivered receipt to replacing it, so that two
    /// devices acknowledging at once never move it backwards.
    delivered: parking_lot::Mutex<()>,
}

/// The receipt bigd records when a device of the user has received an event.
pub const DELIVERED: &str = "ai.iambig.delivered";

/// One delivered receipt to record: `user` has received `sender`'s event.
#[derive(Debug, Clone)]
pub struct DeliveredItem {
    pub short_room: u64,
    pub user: OwnedUserId,
    pub sender: OwnedUserId,
    pub event_id: String,
    pub event_count: u64,
}

/// Receipt types only their owner may see.
fn is_private(kind: &str) -> bool {
    kind == "m.read.private"
}

impl Receipts {
    pub fn new(db: Engine) -> Self {
        Self {
            db,
            delivered: Default::default(),
        }
    }

    /// Records a user's receipt (replacing their previous one of that type and thread).
    pub fn set(
        &self,
        short_room: u64,
        kind: &str,
        user: &UserId,
        thread: Option<&str>,
        event_id: &str,
    ) -> Result<()> {
        self.write(short_room, kind, user, thread, event_id, None)
    }

    /// Records delivered receipts in one batch: for each, that `user` has
    /// received `sender`'s event at timeline position `event_count`, unless
    /// their receipt for that sender in the room is already there or later.
    /// Returns how many moved.
    pub fn set_delivered_many(&self, items: &[DeliveredItem]) -> Result<usize> {
        // The newest per (room, user, sender): one batch holds each key once.
        let mut newest: BTreeMap<(u64, OwnedUserId, OwnedUserId), &DeliveredItem> = BTreeMap::new();
        for item in items {
            let key = (item.short_room, item.user.clone(), item.sender.clone());
            let entry = newest.entry(key).or_insert(item);
            if item.event_count > entry.event_count {
                *entry = item;
            }
        }
        let _moving = self.delivered.lock();
        let mut batch = self.db.batch();
        let mut moved = 0;
        for (key, item) in newest {
            if let Some(Raw(old)) = self.db.get(SHORTROOMIDUSERSENDER_DELIVERED, &key)? {
                let old: Value = serde_json::from_slice(&old)?;
                if old["event_count"].as_u64().unwrap_or(0) >= item.event_count {
                    continue;
                }
                if let Some(feed) = old["feed"].as_u64() {
                    batch.delete(
                        USERIDSHORTROOMIDCOUNT_DELIVERED,
                        &(item.sender.clone(), item.short_room, feed),
                    );
                }
            }
            let feed = batch.next_count()?;
            let record = json!({
                "event_id": item.event_id, "event_count": item.event_count,
                "ts": now_ms(), "feed": feed,
            });
            batch.put(
                SHORTROOMIDUSERSENDER_DELIVERED,
                &key,
                &Raw(serde_json::to_vec(&record)?),
            );
            batch.put(
                USERIDSHORTROOMIDCOUNT_DELIVERED,
                &(item.sender.clone(), item.short_room, feed),
                &Raw(item.user.as_bytes().to_vec()),
            );
            moved += 1;
        }
        if moved > 0 {
            batch.commit()?;
        }
        Ok(moved)
    }

    /// The delivered receipts on `sender`'s events in a room that changed in
    /// (after, upto], as `{event_id: {"ai.iambig.delivered": {user: {ts}}}}`.
    fn delivered_since(
        &self,
        short_room: u64,
        sender: &UserId,
        after: u64,
        upto: u64,
        content: &mut BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    ) -> Result<()> {
        let feed_prefix = prefix(&(sender.to_owned(), short_room));
        let start = (sender.to_owned(), short_room, after.saturating_add(1)).encode();
        for row in self
            .db
            .iter(USERIDSHORTROOMIDCOUNT_DELIVERED, &feed_prefix, &start, true)
        {
            let ((_, _, feed), Raw(user)) = row?;
            if feed > upto {
                break;
            }
            let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&user).into_owned())
            else {
                continue;
            };
            let key = (short_room, user.clone(), sender.to_owned());
            let Some(Raw(record)) = self.db.get(SHORTROOMIDUSERSENDER_DELIVERED, &key)? else {
                continue;
            };
            let record: Value = serde_json::from_slice(&record)?;
            if let Some(event_id) = record["event_id"].as_str() {
                content
                    .entry(event_id.to_owned())
                    .or_default()
                    .entry(DELIVERED.to_owned())
                    .or_default()
                    .insert(user.to_string(), json!({ "ts": record["ts"] }));
            }
        }
        Ok(())
    }

    fn write(
        &self,
        short_room: u64,
        kind: &str,
        user: &UserId,
        thread: Option<&str>,
        event_id: &str,
        event_count: Option<u64>,
    ) -> Result<()> {
        let thread = thread.unwrap_or_default().to_owned();
        let key = (short_room, kind.to_owned(), user.to_owned(), thread.clone());
        let mut batch = self.db.batch();
        if let Some(Raw(old)) = self.db.get(SHORTROOMIDTYPEUSERTHREAD_RECEIPT, &key)? {
            let old: Value = serde_json::from_slice(&old)?;
            if let Some(count) = old["count"].as_u64() {
                batch.delete(SHORTROOMIDCOUNT_RECEIPTKEY, &(short_room, count));
            }
        }
        let count = batch.next_count()?;
        let mut record = json!({ "event_id": event_id, "ts": now_ms(), "count": count });
        if let Some(event_count) = event_count {
            record["event_count"] = json!(event_count);
        }
        batch.put(
            SHORTROOMIDTYPEUSERTHREAD_RECEIPT,
            &key,
            &Raw(serde_json::to_vec(&record)?),
        );
        batch.put(
            SHORTROOMIDCOUNT_RECEIPTKEY,
            &(short_room, count),
            &Raw(serde_json::to_vec(&json!([kind, user, thread]))?),
        );
        batch.commit()
    }

    /// The `m.receipt` content of receipts changed in (after, upto], as `viewer`
    /// may see them; `None` when there are none.
    pub fn receipt_event_since(
        &self,
        short_room: u64,
        viewer: &UserId,
        after: u64,
        upto: u64,
    ) -> Result<Option<Value>> {
        let room_prefix = prefix(&(short_room,));
        let start = (short_room, after.saturating_add(1)).encode();
        // event_id -> type -> user -> {ts, thread_id?}
        let mut content: BTreeMap<String, BTreeMap<String, Map<String, Value>>> = BTreeMap::new();
        for row in self
            .db
            .iter(SHORTROOMIDCOUNT_RECEIPTKEY, &room_prefix, &start, true)
        {
            let ((_, count), Raw(key)) = row?;
            if count > upto {
                break;
            }
            let (kind, user, thread): (String, OwnedUserId, String) = serde_json::from_slice(&key)?;
            if is_private(&kind) && user != viewer {
                continue;
            }
            // Delivered receipts have their own feed (`delivered_since`).
            if kind == DELIVERED {
                continue;
            }
            let key = (short_room, kind.clone(), user.clone(), thread.clone());
            let Some(Raw(record)) = self.db.get(SHORTROOMIDTYPEUSERTHREAD_RECEIPT, &key)? else {
                continue;
            };
            let record: Value = serde_json::from_slice(&record)?;
            let Some(event_id) = record["event_id"].as_str() else {
                continue;
            };
            let mut receipt = json!({ "ts": record["ts"] });
            if !thread.is_empty() {
                receipt["thread_id"] = json!(thread);
            }
            content
                .entry(event_id.to_owned())
                .or_default()
                .entry(kind)
                .or_default()
                .insert(user.to_string(), receipt);
        }
        self.delivered_since(short_room, viewer, after, upto, &mut content)?;
        if content.is_empty() {
            return Ok(None);
        }
        Ok(Some(json!({ "type": "m.receipt", "content": content })))
    }
}
