//! Typing notifications: kept in memory, each expiring by itself. Every change
//! takes a global count (written to `shortroomid_typingcount`), so sync tokens
//! order it with everything else and waiting syncs wake up.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};

use crate::{
    error::Result,
    storage::{Engine, SHORTROOMID_TYPINGCOUNT},
};

/// Longest typing notification a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// The count of the latest change.
    changed: u64,
}

#[derive(Debug)]
pub struct Typing {
    db: Engine,
    rooms: Mutex<HashMap<u64, RoomTyping>>,
    me: Weak<Typing>,
}

impl Typing {
    pub fn new(db: Engine) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            db,
            rooms: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Starts (`Some(timeout)`) or stops (`None`) a user's typing in a room.
    pub fn set(&self, short_room: u64, user: &UserId, timeout: Option<Duration>) -> Result<()> {
        let changed = {
            let mut rooms = self.rooms.lock();
            let room = rooms.entry(short_room).or_default();
            match timeout {
                Some(timeout) => {
                    let timeout = timeout.min(MAX_TIMEOUT);
                    let was_typing = room
                        .users
                        .insert(user.to_owned(), Instant::now() + timeout)
                        .is_some();
                    self.expire_after(short_room, timeout);
                    !was_typing
                }
                None => room.users.remove(user).is_some(),
            }
        };
        if changed {
            self.record_change(short_room)?;
        }
        Ok(())
    }

    fn expire_after(&self, short_room: u64, timeout: Duration) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout + Duration::from_millis(10)).await;
            if let Some(typing) = me.upgrade()
                && let Err(e) = typing.expire(short_room)
            {
                tracing::warn!(error = %e, "could not expire typing notifications");
            }
        });
    }

    fn expire(&self, short_room: u64) -> Result<()> {
        let now = Instant::now();
        let expired = {
            let mut rooms = self.rooms.lock();
            let Some(room) = rooms.get_mut(&short_room) else {
                return Ok(());
            };
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            room.users.len() != before
        };
        if expired {
            self.record_change(short_room)?;
        }
        Ok(())
    }

    fn record_change(&self, short_room: u64) -> Result<()> {
        let mut batch = self.db.batch();
        let count = batch.next_count()?;
        batch.put(SHORTROOMID_TYPINGCOUNT, &short_room, &count);
        // Recorded before the commit wakes anyone, so a woken sync sees it.
        if let Some(room) = self.rooms.lock().get_mut(&short_room) {
            room.changed = room.changed.max(count);
        }
        batch.commit()
    }

    /// Who is typing, if that changed after `after` (always on an initial sync
    /// with someone typing).
    pub fn typing_since(&self, short_room: u64, after: u64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock();
        let room = rooms.get(&short_room)?;
        let now = Instant::now();
        let users: Vec<OwnedUserId> = room
            .users
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(u, _)| u.clone())
            .collect();
        let changed = if after == 0 {
            !users.is_empty()
        } else {
            room.changed > after
        };
        changed.then_some(users)
    }
}
