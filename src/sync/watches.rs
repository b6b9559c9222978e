//! What a sync sleeps on, part by part. A long-poll only needs to know that
//! something fired; a live subscription (`live.rs`) also asks *which* parts
//! fired, so that its next frame reads only those.

use std::{collections::BTreeMap, sync::Arc};

use ruma::OwnedRoomId;
use tokio::sync::Notify;

use crate::{
    Services,
    auth::Identity,
    error::Result,
    storage::{
        COUNT_KEYCHANGEUSER, COUNT_PRESENCEUSER, Key, SHORTROOMID_TYPINGCOUNT,
        SHORTROOMIDCOUNT_RECEIPTKEY, SHORTROOMIDCOUNT_SHORTEVENTID, USERIDCOUNT_ACCOUNTDATAKEY,
        USERIDDEVICECOUNT_TODEVICE, USERIDDEVICEIDALGORITHM_FALLBACKKEY,
        USERIDDEVICEIDKEYID_ONETIMEKEY, USERIDROOMID_MEMBERSHIP, USERIDSHORTROOMIDCOUNT_DELIVERED,
        Watch, prefix,
    },
};

/// One watched part of a device's sync.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Memberships,
    AccountData,
    ToDevice,
    Presence,
    /// Anyone's device keys (whether they concern this user is for the build).
    KeyChanges,
    /// The device's own one-time and fallback keys (live subscriptions only).
    OneTimeKeys,
    FallbackKeys,
    Room(RoomPart, OwnedRoomId, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomPart {
    Timeline,
    Typing,
    Receipts,
    /// Delivered receipts on this user's messages in the room.
    Delivered,
}

/// Which parts of a sync may have news.
#[derive(Debug, Default)]
pub struct Changed {
    pub memberships: bool,
    pub account_data: bool,
    pub to_device: bool,
    pub presence: bool,
    pub key_changes: bool,
    /// The device's one-time or fallback keys.
    pub own_keys: bool,
    pub rooms: BTreeMap<OwnedRoomId, RoomChanged>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RoomChanged {
    pub timeline: bool,
    /// Typing, read receipts, or delivered receipts on the user's messages.
    pub ephemeral: bool,
}

impl Changed {
    /// News that reshapes the response (rooms joined or left, room account
    /// data): only a full build handles it.
    pub fn needs_full_build(&self) -> bool {
        self.memberships || self.account_data
    }

    fn mark(&mut self, part: &Part) {
        match part {
            Part::Memberships => self.memberships = true,
            Part::AccountData => self.account_data = true,
            Part::ToDevice => self.to_device = true,
            Part::Presence => self.presence = true,
            Part::KeyChanges => self.key_changes = true,
            Part::OneTimeKeys | Part::FallbackKeys => self.own_keys = true,
            Part::Room(kind, room, _) => {
                let room = self.rooms.entry(room.clone()).or_default();
                match kind {
                    RoomPart::Timeline => room.timeline = true,
                    RoomPart::Typing | RoomPart::Receipts | RoomPart::Delivered => {
                        room.ephemeral = true;
                    }
                }
            }
        }
    }
}

/// The watches of one sync, each labelled with its part, all ringing one
/// bell: waiting costs the same however many rooms the user is in.
pub struct Watches {
    list: Vec<Watched>,
    bell: Arc<Notify>,
}

struct Watched {
    part: Part,
    watch: Watch,
}

impl Watched {
    fn has_fired(&self) -> bool {
        self.watch.has_changed().unwrap_or(true)
    }
}

impl Watches {
    /// Registers every part of `who`'s sync; register before reading. A live
    /// subscription also watches the device's own keys (their counts are in
    /// every frame; a long-poll reads them each time anyway).
    pub fn register(s: &Services, who: &Identity, live: bool) -> Result<Self> {
        let bell = Arc::new(Notify::new());
        let mut list = Vec::new();
        let mut add = |part: Part| {
            list.push(Watched {
                watch: watch(s, who, &part, &bell),
                part,
            });
        };
        // Memberships first: a join after this fires it, so the rooms read
        // below cannot miss one without the next build seeing it.
        add(Part::Memberships);
        add(Part::AccountData);
        add(Part::ToDevice);
        add(Part::KeyChanges);
        if s.presence.enabled() {
            add(Part::Presence);
        }
        if live {
            add(Part::OneTimeKeys);
            add(Part::FallbackKeys);
        }
        for room in s.rooms.joined_rooms_cached(&who.user_id)?.iter() {
            if let Some(meta) = s.rooms.meta(room)? {
                for kind in [
                    RoomPart::Timeline,
                    RoomPart::Typing,
                    RoomPart::Receipts,
                    RoomPart::Delivered,
                ] {
                    add(Part::Room(kind, room.clone(), meta.short));
                }
            }
        }
        Ok(Self { list, bell })
    }

    /// Resolves once any watch has seen a change (at once if one already
    /// has). Cancel-safe: nothing is consumed.
    pub async fn changed(&mut self) {
        loop {
            if self.list.iter().any(Watched::has_fired) {
                return;
            }
            // A ring since the check is kept as a permit: not lost.
            self.bell.notified().await;
        }
    }

    /// Marks in `changed` the parts whose watches have fired so far.
    pub fn mark_fired(&self, changed: &mut Changed) {
        for watched in self.list.iter().filter(|w| w.has_fired()) {
            changed.mark(&watched.part);
        }
    }

    /// Re-arms each fired watch as if registered now: it fires on writes
    /// after this call. Unfired watches stay as they are. The parts renewed
    /// are marked in `changed`.
    pub fn renew_fired(&mut self, s: &Services, who: &Identity, changed: &mut Changed) {
        for watched in self.list.iter_mut().filter(|w| w.has_fired()) {
            if watched.watch.has_changed().is_ok() {
                // Still following its prefix (holding it keeps the prefix
                // registered, with the bell): marked seen, it fires on
                // writes after now, as a new registration would.
                watched.watch.mark_unchanged();
            } else {
                watched.watch = watch(s, who, &watched.part, &self.bell);
            }
            changed.mark(&watched.part);
        }
    }
}

fn watch(s: &Services, who: &Identity, part: &Part, bell: &Arc<Notify>) -> Watch {
    let user = &who.user_id;
    let device = (user.clone(), who.device_id.clone());
    match part {
        Part::Memberships => {
            s.db.watch_ringing(USERIDROOMID_MEMBERSHIP, prefix(&(user.clone(),)), bell)
        }
        Part::AccountData => {
            s.db.watch_ringing(USERIDCOUNT_ACCOUNTDATAKEY, prefix(&(user.clone(),)), bell)
        }
        Part::ToDevice => {
            s.db.watch_ringing(USERIDDEVICECOUNT_TODEVICE, prefix(&device), bell)
        }
        Part::Presence => s.db.watch_ringing(COUNT_PRESENCEUSER, Vec::new(), bell),
        Part::KeyChanges => s.db.watch_ringing(COUNT_KEYCHANGEUSER, Vec::new(), bell),
        Part::OneTimeKeys => {
            s.db.watch_ringing(USERIDDEVICEIDKEYID_ONETIMEKEY, prefix(&device), bell)
        }
        Part::FallbackKeys => {
            s.db.watch_ringing(USERIDDEVICEIDALGORITHM_FALLBACKKEY, prefix(&device), bell)
        }
        Part::Room(kind, _, short) => match kind {
            RoomPart::Timeline => {
                s.db.watch_ringing(SHORTROOMIDCOUNT_SHORTEVENTID, prefix(&(*short,)), bell)
            }
            RoomPart::Typing => {
                s.db.watch_ringing(SHORTROOMID_TYPINGCOUNT, short.encode(), bell)
            }
            RoomPart::Receipts => {
                s.db.watch_ringing(SHORTROOMIDCOUNT_RECEIPTKEY, prefix(&(*short,)), bell)
            }
            RoomPart::Delivered => s.db.watch_ringing(
                USERIDSHORTROOMIDCOUNT_DELIVERED,
                prefix(&(user.clone(), *short)),
                bell,
            ),
        },
    }
}
