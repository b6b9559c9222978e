//! What a room looks like to a syncing user between two positions of the global
//! count: new timeline events, state deltas, stripped state for invites, the
//! summary. `/sync` is built from these.

use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{EventMeta, MembershipRecord, Pdu, Rooms, VisibilityAt, state::StateMap};
use crate::{
    error::Result,
    storage::{Key, SHORTROOMIDCOUNT_SHORTEVENTID, USERIDROOMID_MEMBERSHIP, prefix},
};

/// One viewer's visibility lookups, per state snapshot. A snapshot never
/// changes, so what is kept stays right; a live subscription keeps one, and
/// each message of a room without state changes is checked from it.
#[derive(Debug, Default)]
pub struct VisibilityMemo(std::collections::HashMap<u64, VisibilityAt>);

impl VisibilityMemo {
    /// Snapshots kept at most; past that the memo starts over.
    const MAX: usize = 64;

    fn bound(&mut self) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
    }
}

/// Entries a sync loads into a room's timeline window: live frames and
/// incremental syncs ask for the newest few.
const RECENT_LOAD: usize = 64;

/// A stored event with its metadata.
pub type StoredEvent = (Arc<Pdu>, Arc<EventMeta>);

/// Timeline events of a room in (after, upto], the newest `limit` of them.
#[derive(Debug, Default)]
pub struct TimelineSlice {
    pub events: Vec<StoredEvent>,
    /// More events in the range than `limit`.
    pub limited: bool,
}

/// State types shown in invites and knocks (the spec's recommended set).
const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl Rooms {
    /// Every room the user has a membership record in.
    /// The user's membership just before the event `short` (one of their
    /// member events), `None` if they had none.
    pub fn membership_before(&self, short: u64, user: &UserId) -> Result<Option<String>> {
        let Some(meta) = self.event_meta(short)? else {
            return Ok(None);
        };
        let state = self.state.load(meta.state_before)?;
        self.membership_in(&state, user)
    }

    pub fn memberships(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
        let rows = self
            .db
            .scan_prefix(USERIDROOMID_MEMBERSHIP, &prefix(&(user.to_owned(),)))?;
        Ok(rows
            .into_iter()
            .map(|((_, room), record)| (room, record))
            .collect())
    }

    /// A count at or above that of the room's newest event, from memory once
    /// known: "nothing after `n`" checks use it instead of a read.
    pub fn newest_count_at_most(&self, room: &RoomId) -> Result<u64> {
        match self.meta(room)? {
            Some(meta) => self.newest_bound(meta.short),
            None => Ok(0),
        }
    }

    /// [`Self::newest_count_at_most`] of a room known by its short id.
    fn newest_bound(&self, short_room: u64) -> Result<u64> {
        if let Some(&known) = self.newest.lock().get(&short_room) {
            return Ok(known);
        }
        let stored = self.latest_count_of(short_room)?;
        let mut newest = self.newest.lock();
        let known = newest.entry(short_room).or_insert(stored);
        *known = (*known).max(stored);
        Ok(*known)
    }

    /// Notes an event staged at `count` in a batch not committed yet.
    pub(super) fn note_newest(&self, short_room: u64, count: u64) {
        let mut newest = self.newest.lock();
        let known = newest.entry(short_room).or_insert(count);
        *known = (*known).max(count);
    }

    /// The count of the room's newest event, read from storage (0 for none).
    fn latest_count_of(&self, short_room: u64) -> Result<u64> {
        let newest = self
            .db
            .iter(
                SHORTROOMIDCOUNT_SHORTEVENTID,
                &prefix(&(short_room,)),
                &(short_room, u64::MAX).encode(),
                false,
            )
            .next()
            .transpose()?;
        Ok(newest.map_or(0, |((_, count), _)| count))
    }

    /// The newest `limit` events with counts in (after, upto] that pass `keep`.
    pub fn timeline_between(
        &self,
        room: &RoomId,
        after: u64,
        upto: u64,
        limit: usize,
        mut keep: impl FnMut(&Pdu, &EventMeta) -> Result<bool>,
    ) -> Result<TimelineSlice> {
        let meta = self.require_meta(room)?;
        let start = upto.saturating_add(1);
        let mut events = Vec::new();
        let mut limited = false;
        // New events of a live room come from its window in memory.
        let newest = self.newest_bound(meta.short)?;
        let recent = self
            .timelines
            .get_loading(meta.short, RECENT_LOAD)?
            .lock()
            .between(after, upto, newest);
        let rows: Box<dyn Iterator<Item = Result<(u64, u64)>>> = match recent {
            Some(entries) => Box::new(entries.into_iter().map(Ok)),
            None => Box::new(
                self.db
                    .iter(
                        SHORTROOMIDCOUNT_SHORTEVENTID,
                        &prefix(&(meta.short,)),
                        &(meta.short, start).encode(),
                        false,
                    )
                    .map(|row| row.map(|((_, count), short)| (count, short))),
            ),
        };
        for row in rows {
            let (count, short) = row?;
            if count <= after {
                break;
            }
            let (Some(pdu), Some(event_meta)) = (self.pdu(short)?, self.event_meta_shared(short)?)
            else {
                continue;
            };
            if !keep(&pdu, &event_meta)? {
                continue;
            }
            if events.len() == limit {
                limited = true;
                break;
            }
            events.push((pdu, event_meta));
        }
        events.reverse();
        Ok(TimelineSlice { events, limited })
    }

    /// A user's view of a room's history: checks events without re-reading
    /// their membership for each one.
    pub fn history_view<'a>(
        &'a self,
        room: &RoomId,
        user: &'a UserId,
    ) -> Result<impl Fn(&Pdu, &EventMeta) -> Result<bool> + 'a> {
        let until = self.joined_until(room, user)?;
        Ok(move |pdu: &Pdu, meta: &EventMeta| self.can_see(user, pdu, meta, until))
    }

    /// [`Self::history_view`] for a user known to be joined to the room (a
    /// live sync whose memberships have not changed): no membership read,
    /// and what it looks up is kept in `memo` for the viewer's next checks.
    pub fn joined_history_view<'a>(
        &'a self,
        user: &'a UserId,
        memo: &'a mut VisibilityMemo,
    ) -> impl FnMut(&Pdu, &EventMeta) -> Result<bool> + 'a {
        memo.bound();
        move |pdu: &Pdu, meta: &EventMeta| {
            self.can_see_with(user, pdu, meta, Some(u64::MAX), Some(&mut memo.0))
        }
    }

    /// The state before the first event with a count above `count` (the room's
    /// state "at" that position), or the current state if there is none.
    pub fn state_at_count(&self, room: &RoomId, count: u64) -> Result<Arc<StateMap>> {
        let meta = self.require_meta(room)?;
        let next = self
            .db
            .iter(
                SHORTROOMIDCOUNT_SHORTEVENTID,
                &prefix(&(meta.short,)),
                &(meta.short, count.saturating_add(1)).encode(),
                true,
            )
            .next()
            .transpose()?;
        match next {
            Some((_, short)) => match self.event_meta_shared(short)? {
                Some(event_meta) => self.state.load(event_meta.state_before),
                None => self.state.load(meta.current_state),
            },
            None => self.state.load(meta.current_state),
        }
    }

    /// The state snapshot before an event.
    pub fn state_before(&self, meta: &EventMeta) -> Result<Arc<StateMap>> {
        self.state.load(meta.state_before)
    }

    pub fn current_state(&self, room: &RoomId) -> Result<Arc<StateMap>> {
        self.state.load(self.require_meta(room)?.current_state)
    }

    /// The content of the current state event (kind, key) of a room, if any.
    pub fn current_state_content(
        &self,
        room: &RoomId,
        kind: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>> {
        let state = self.current_state(room)?;
        match self.state_event(&state, kind, key)? {
            Some(pdu) => Ok(Some(pdu.content_value())),
            None => Ok(None),
        }
    }

    /// State events in `to` that differ from `from`, as stored events.
    pub fn state_delta(&self, from: &StateMap, to: &StateMap) -> Result<Vec<StoredEvent>> {
        let mut events = Vec::new();
        for (key, short) in to {
            if from.get(key) != Some(short) {
                events.extend(self.stored(*short)?);
            }
        }
        Ok(events)
    }

    /// Every event of a state map.
    pub fn state_events_of(&self, state: &StateMap) -> Result<Vec<StoredEvent>> {
        let mut events = Vec::with_capacity(state.len());
        for short in state.values() {
            events.extend(self.stored(*short)?);
        }
        Ok(events)
    }

    /// Member events of the given users in a state map.
    pub fn member_events_of(
        &self,
        state: &StateMap,
        users: impl IntoIterator<Item = String>,
    ) -> Result<Vec<StoredEvent>> {
        let mut events = Vec::new();
        for user in users {
            if let Some(key) = self.state.short_key("m.room.member", &user)?
                && let Some(short) = state.get(&key)
            {
                events.extend(self.stored(*short)?);
            }
        }
        Ok(events)
    }

    fn stored(&self, short: u64) -> Result<Option<StoredEvent>> {
        Ok(match (self.pdu(short)?, self.event_meta_shared(short)?) {
            (Some(pdu), Some(meta)) => Some((pdu, meta)),
            _ => None,
        })
    }

    /// The stripped state an invited or knocking user sees, plus their own
    /// membership event.
    pub fn stripped_state(&self, room: &RoomId, user: &UserId) -> Result<Vec<Value>> {
        let state = self.current_state(room)?;
        let mut events = Vec::new();
        let user_key = user.as_str().to_owned();
        let wanted = STRIPPED_STATE
            .iter()
            .map(|kind| (*kind, ""))
            .chain(std::iter::once(("m.room.member", user_key.as_str())));
        for (kind, key) in wanted {
            if let Some(event) = self.state_event(&state, kind, key)? {
                events.push(json!({
                    "type": kind,
                    "state_key": key,
                    "content": event.parsed_content(),
                    "sender": event.sender(),
                }));
            }
        }
        Ok(events)
    }

    /// Joined members of this server with their display names (for push rules).
    pub fn joined_local_members(&self, room: &RoomId) -> Result<super::LocalMembers> {
        let snapshot = self.require_meta(room)?.current_state;
        if let Some(members) = self.local_members.lock().get(&snapshot) {
            return Ok(members.clone());
        }
        let state = self.state.load(snapshot)?;
        let mut members = Vec::new();
        for (&key, &short) in state.iter() {
            let (kind, member) = self.state.key_of(key)?;
            if kind != "m.room.member" {
                continue;
            }
            let Ok(member) = ruma::OwnedUserId::try_from(member) else {
                continue;
            };
            if member.server_name() != self.server_name() {
                continue;
            }
            let Some(event) = self.pdu(short)? else {
                continue;
            };
            if event.content_str("membership").as_deref() == Some("join") {
                let name = event
                    .content_str("displayname")
                    .unwrap_or_else(|| member.localpart().to_owned());
                members.push((member, name));
            }
        }
        let members = std::sync::Arc::new(members);
        self.local_members.lock().put(snapshot, members.clone());
        Ok(members)
    }

    /// `summary` of a room for a user: heroes and member counts.
    pub fn sync_summary(&self, room: &RoomId, user: &UserId) -> Result<Value> {
        let state = self.current_state(room)?;
        let (mut joined, mut invited) = (0u64, 0u64);
        let mut heroes = Vec::new();
        for (&key, &short) in state.iter() {
            let (kind, member) = self.state.key_of(key)?;
            if kind != "m.room.member" {
                continue;
            }
            let Some(event) = self.pdu(short)? else {
                continue;
            };
            let membership = event.content_str("membership");
            match membership.as_deref() {
                Some("join") => joined += 1,
                Some("invite") => invited += 1,
                _ => continue,
            }
            if member != user.as_str() {
                heroes.push((short, member));
            }
        }
        // The spec: heroes are the first members to have joined or been invited.
        heroes.sort();
        let heroes: Vec<String> = heroes
            .into_iter()
            .take(5)
            .map(|(_, member)| member)
            .collect();
        Ok(
            json!({ "m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited }),
        )
    }
}
