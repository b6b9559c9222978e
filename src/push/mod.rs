//! Push: which events notify whom, and the unread counts built from that.
//!
//! When an event is written, every joined local member but the sender gets the
//! event evaluated with the push rule engine (ruma's, with the spec's default
//! rules); a notifying event is recorded for that user in the event's own batch.
//! A read receipt deletes what it covers, so the counts are what is left.
//! (User-defined rules, `/notifications` and pushers build on this.)

use std::{collections::BTreeMap, num::NonZeroUsize};

use lru::LruCache;
use parking_lot::Mutex;

use ruma::{
    OwnedEventId, OwnedUserId, UInt, UserId,
    events::AnySyncTimelineEvent,
    push::{PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    rooms::{Pdu, Rooms},
    storage::{Batch, Engine, Key, Raw as Bytes, USERIDSHORTROOMIDCOUNT_NOTIFY, prefix},
};

/// One user to notify about one event.
#[derive(Debug, Clone)]
pub struct Notify {
    pub user: OwnedUserId,
    pub highlight: bool,
    /// The thread root, for events in a thread.
    pub thread: Option<OwnedEventId>,
}

/// Unread counts of a user in a room.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnreadCounts {
    pub notifications: u64,
    pub highlights: u64,
    /// Per thread root.
    pub threads: BTreeMap<String, (u64, u64)>,
}

/// Which members to notify about a new event of `room`, per the push rules.
pub async fn evaluate(rooms: &Rooms, room: &ruma::RoomId, pdu: &Pdu) -> Result<Vec<Notify>> {
    let members = rooms.joined_local_members(room)?;
    if members.len() <= 1 {
        return Ok(Vec::new());
    }
    let json = pdu.to_client_json(&Map::new())?;
    let event: Raw<AnySyncTimelineEvent> =
        Raw::from_json(serde_json::value::RawValue::from_string(json)?);
    let power_levels = rooms.power_levels(room)?;
    let thread = crate::rooms::thread_root_of(pdu);
    let member_count = UInt::new_saturating(members.len() as u64);
    let mut notify = Vec::new();
    for (user, display_name) in members {
        if user == pdu.sender() {
            continue;
        }
        let ruleset = Ruleset::server_default(&user);
        let ctx =
            PushConditionRoomCtx::new(room.to_owned(), member_count, user.clone(), display_name)
                .with_power_levels(power_levels.clone().into());
        let actions = ruleset.get_actions(&event, &ctx).await;
        if actions.iter().any(|a| a.should_notify()) {
            let highlight = actions.iter().any(|a| a.is_highlight());
            notify.push(Notify {
                user,
                highlight,
                thread: thread.clone(),
            });
        }
    }
    Ok(notify)
}

/// Users' rooms whose counts are kept in memory.
const COUNTS_CACHE: usize = 50_000;

/// Counts of one user in one room, covering the notification rows up to `upto`.
#[derive(Debug, Clone)]
struct CachedCounts {
    counts: UnreadCounts,
    upto: u64,
}

/// The stored part of a notification row that counting needs.
#[derive(serde::Deserialize)]
struct CountedRow<'a> {
    #[serde(default)]
    highlight: bool,
    #[serde(borrow, default)]
    thread: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug)]
pub struct Notifications {
    db: Engine,
    /// Counts per (user, room), advanced by reading only rows newer than what
    /// they cover: every sync of every room asks for counts, and a room with
    /// many unread events would otherwise be rescanned each time.
    cache: Mutex<LruCache<(OwnedUserId, u64), CachedCounts>>,
}

impl Notifications {
    pub fn new(db: Engine) -> Self {
        let capacity = NonZeroUsize::new(COUNTS_CACHE).unwrap_or(NonZeroUsize::MIN);
        Self {
            db,
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Records notifications in the event's batch.
    pub fn stage(
        batch: &mut Batch,
        short_room: u64,
        count: u64,
        event: &OwnedEventId,
        notify: &[Notify],
    ) -> Result<()> {
        for n in notify {
            let record = json!({ "event_id": event, "highlight": n.highlight, "thread": n.thread });
            batch.put(
                USERIDSHORTROOMIDCOUNT_NOTIFY,
                &(n.user.clone(), short_room, count),
                &Bytes(serde_json::to_vec(&record)?),
            );
        }
        Ok(())
    }

    /// A read receipt at `upto`: clears the notifications it covers. `thread`:
    /// `None` for an unthreaded receipt (everything), `Some("main")` for the
    /// main timeline, `Some(root)` for one thread.
    pub fn clear_read(
        &self,
        user: &UserId,
        short_room: u64,
        upto: u64,
        thread: Option<&str>,
    ) -> Result<()> {
        let room_prefix = prefix(&(user.to_owned(), short_room));
        // Held across the commit so that no count is cached from before it.
        let mut cache = self.cache.lock();
        let mut batch = self.db.batch();
        for row in self.db.iter(
            USERIDSHORTROOMIDCOUNT_NOTIFY,
            &room_prefix,
            &room_prefix,
            true,
        ) {
            let ((u, room, count), Bytes(record)) = row?;
            if count > upto {
                break;
            }
            let record: Value = serde_json::from_slice(&record)?;
            let in_thread = record["thread"].as_str();
            let covered = match thread {
                None => true,
                Some("main") => in_thread.is_none(),
                Some(root) => in_thread == Some(root),
            };
            if covered {
                batch.delete(USERIDSHORTROOMIDCOUNT_NOTIFY, &(u, room, count));
            }
        }
        if !batch.is_empty() {
            batch.commit()?;
            cache.pop(&(user.to_owned(), short_room));
        }
        Ok(())
    }

    pub fn counts(&self, user: &UserId, short_room: u64) -> Result<UnreadCounts> {
        // Rows up to the visible count are all committed: none can appear
        // below it later, so what is cached stays exact until a receipt.
        let upto = self.db.visible_count();
        let key = (user.to_owned(), short_room);
        let mut cache = self.cache.lock();
        let mut cached = cache.get(&key).cloned().unwrap_or(CachedCounts {
            counts: UnreadCounts::default(),
            upto: 0,
        });
        if cached.upto < upto {
            self.count_rows(user, short_room, cached.upto, upto, &mut cached.counts)?;
            cached.upto = upto;
            cache.put(key, cached.clone());
        }
        Ok(cached.counts)
    }

    /// Adds the notification rows in (after, upto] to `counts`.
    fn count_rows(
        &self,
        user: &UserId,
        short_room: u64,
        after: u64,
        upto: u64,
        counts: &mut UnreadCounts,
    ) -> Result<()> {
        let room_prefix = prefix(&(user.to_owned(), short_room));
        let start = (user.to_owned(), short_room, after.saturating_add(1)).encode();
        for row in self
            .db
            .iter(USERIDSHORTROOMIDCOUNT_NOTIFY, &room_prefix, &start, true)
        {
            let ((_, _, count), Bytes(record)) = row?;
            if count > upto {
                break;
            }
            let row: CountedRow = serde_json::from_slice(&record)?;
            let highlight = u64::from(row.highlight);
            match row.thread {
                Some(root) => {
                    let entry = counts.threads.entry(root.into_owned()).or_default();
                    entry.0 += 1;
                    entry.1 += highlight;
                }
                None => {
                    counts.notifications += 1;
                    counts.highlights += highlight;
                }
            }
        }
        Ok(())
    }

    /// Deletes a user's notifications everywhere (account deactivation).
    pub fn stage_delete_user(batch: &mut Batch, user: &UserId) -> Result<()> {
        batch.delete_prefix(USERIDSHORTROOMIDCOUNT_NOTIFY, &prefix(&(user.to_owned(),)))
    }
}
