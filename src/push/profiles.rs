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

use std::{num::NonZeroUsize, sync::Arc};

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

/// Rooms whose profiles are kept.
const ROOMS: usize = 2_048;

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
    rooms: Mutex<LruCache<OwnedRoomId, Arc<RoomProfile>>>,
}

impl Profiles {
    pub fn new() -> Self {
        Self {
            rooms: Mutex::new(LruCache::new(
                NonZeroUsize::new(ROOMS).unwrap_or(NonZeroUsize::MIN),
            )),
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
        if let Some(profile) = self.rooms.lock().get(room)
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
        self.rooms.lock().put(room.to_owned(), profile.clone());
        Ok(profile)
    }
}
