//! What evaluating an event needs of each local member of a room (their
//! rules and pusher destinations), kept per room. Looking both up per
//! member for every event was a fifth of the cost of a send in a group:
//! each lookup is a hash-and-compare in a large cache that a quiet server
//! has let go cold. A room's profile is one lookup and a walk down a list.
//!
//! A profile is valid while the room's member list is the one it was built
//! for (the same `LocalMembers`, which changes with the room's state), no
//! user's rules have changed (`PushRules::generation`), and no pusher was
//! written (a watch on the pusher table, registered before the read).

use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomId, UserId};

use super::{
    pushers::Pushers,
    rules::{PushRules, Rules},
};
use crate::{
    error::Result,
    outbox::Destination,
    rooms::LocalMembers,
    storage::{Engine, USERIDAPPIDPUSHKEY_PUSHER, Watch},
};

/// Member entries kept across all profiles. A profile holds its members'
/// rulesets (about 15 KiB each with the defaults), so this bounds them as
/// the rules cache does; a room larger than this is built per event.
const MAX_MEMBERS: usize = 20_000;

/// One member's part of a room profile.
#[derive(Debug)]
pub struct MemberProfile {
    pub rules: Rules,
    pub pushers: Vec<Destination>,
}

impl MemberProfile {
    /// Reads `user`'s rules and, unless `pushers` is `None` (delivery is
    /// off), their pushers' destinations.
    pub fn read(user: &UserId, rules: &PushRules, pushers: Option<&Pushers>) -> Result<Self> {
        Ok(Self {
            rules: rules.get_with_shape(user)?,
            pushers: match pushers {
                Some(pushers) => pushers.destinations(user)?,
                None => Vec::new(),
            },
        })
    }
}

/// The profiles of a room's local members, in the order of `members`.
#[derive(Debug)]
pub struct RoomProfile {
    members: LocalMembers,
    pub profiles: Vec<MemberProfile>,
    rules_generation: u64,
    pushers_written: Watch,
}

impl RoomProfile {
    fn is_current(&self, members: &LocalMembers, rules: &PushRules) -> bool {
        Arc::ptr_eq(&self.members, members)
            && self.rules_generation == rules.generation()
            && !self.pushers_written.has_changed().unwrap_or(true)
    }
}

#[derive(Debug)]
pub struct Profiles {
    kept: Mutex<Kept<Arc<RoomProfile>>>,
}

/// Values with a size (a profile's member count), least recently used out
/// first, so that the sizes add up to at most `limit`.
#[derive(Debug)]
struct Kept<V> {
    rooms: LruCache<OwnedRoomId, (V, usize)>,
    size: usize,
    limit: usize,
}

impl<V> Kept<V> {
    fn new(limit: usize) -> Self {
        Self {
            rooms: LruCache::unbounded(),
            size: 0,
            limit,
        }
    }

    fn get(&mut self, room: &RoomId) -> Option<&V> {
        self.rooms.get(room).map(|(value, _)| value)
    }

    /// Keeps `value` for `room` unless it alone is over the limit (then the
    /// room's old value goes too).
    fn put(&mut self, room: OwnedRoomId, value: V, size: usize) {
        if size > self.limit {
            if let Some((_, old)) = self.rooms.pop(&room) {
                self.size -= old;
            }
            return;
        }
        if let Some((_, old)) = self.rooms.put(room, (value, size)) {
            self.size -= old;
        }
        self.size += size;
        while self.size > self.limit {
            let Some((_, (_, evicted))) = self.rooms.pop_lru() else {
                break;
            };
            self.size -= evicted;
        }
    }
}

impl Profiles {
    pub fn new() -> Self {
        Self {
            kept: Mutex::new(Kept::new(MAX_MEMBERS)),
        }
    }

    /// The profile of `room` for its current `members` (see
    /// [`MemberProfile::read`] for `pushers`).
    pub fn get(
        &self,
        db: &Engine,
        room: &RoomId,
        members: &LocalMembers,
        rules: &PushRules,
        pushers: Option<&Pushers>,
    ) -> Result<Arc<RoomProfile>> {
        if let Some(profile) = self.kept.lock().get(room)
            && profile.is_current(members, rules)
        {
            return Ok(profile.clone());
        }
        // Both marks are taken before the reads: a change that lands during
        // them makes the next event build the profile again.
        let rules_generation = rules.generation();
        let pushers_written = db.watch(USERIDAPPIDPUSHKEY_PUSHER, Vec::new());
        let profiles = members
            .iter()
            .map(|(user, _)| MemberProfile::read(user, rules, pushers))
            .collect::<Result<Vec<_>>>()?;
        let profile = Arc::new(RoomProfile {
            members: members.clone(),
            profiles,
            rules_generation,
            pushers_written,
        });
        let size = profile.profiles.len();
        self.kept.lock().put(room.to_owned(), profile.clone(), size);
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use ruma::owned_room_id;

    use super::*;

    #[test]
    fn kept_profiles_stay_under_the_member_limit_least_recent_out_first() {
        let mut kept = Kept::new(10);
        let (a, b, c) = (
            owned_room_id!("!a:s"),
            owned_room_id!("!b:s"),
            owned_room_id!("!c:s"),
        );
        kept.put(a.clone(), "a", 4);
        kept.put(b.clone(), "b", 4);
        assert_eq!(kept.get(&a), Some(&"a"), "a is now the most recent");
        kept.put(c.clone(), "c", 4);
        assert_eq!(kept.get(&b), None, "b was the least recent");
        assert_eq!(kept.get(&a), Some(&"a"));
        assert_eq!(kept.get(&c), Some(&"c"));
        assert_eq!(kept.size, 8);

        kept.put(a.clone(), "a2", 2);
        assert_eq!(kept.get(&a), Some(&"a2"), "replaced");
        assert_eq!(kept.size, 6);
        kept.put(c.clone(), "huge", 11);
        assert_eq!(
            kept.get(&c),
            None,
            "too large to keep, and the old one is gone"
        );
        assert_eq!(kept.size, 2);
    }
}
