//! Reading rooms: the client format of events, history visibility, single
//! events, `/messages` pagination, state and members.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{EventMeta, Pdu, Rooms, VisibilityAt, state::StateMap};
use crate::{
    error::{Error, Result},
    storage::{Key, SHORTROOMIDCOUNT_SHORTEVENTID, USERIDROOMID_MEMBERSHIP, prefix},
    util::now_ms,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// Which events a page holds.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<OwnedUserId>>,
    pub not_senders: Vec<OwnedUserId>,
    pub lazy_load_members: bool,
}

impl EventFilter {
    pub fn matches(&self, pdu: &Pdu) -> bool {
        let kind = pdu.kind().to_string();
        let type_ok = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => *pattern == kind,
        };
        self.types.as_ref().is_none_or(|t| t.iter().any(type_ok))
            && !self.not_types.iter().any(type_ok)
            && self
                .senders
                .as_ref()
                .is_none_or(|s| s.iter().any(|u| u == pdu.sender()))
            && !self.not_senders.iter().any(|u| u == pdu.sender())
    }
}

#[derive(Debug)]
pub struct MessagesPage {
    /// Client-format events, each serialised JSON.
    pub chunk: Vec<String>,
    pub start: String,
    pub end: Option<String>,
    pub state: Vec<Value>,
}

/// One entry of the timeline index: ((short room, count), short event).
type TimelineRow = ((u64, u64), u64);

/// Pagination tokens name the boundary before a timeline count: `t<count>`.
pub fn parse_token(token: &str) -> Result<u64> {
    token
        .strip_prefix('t')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::invalid_param(format!(
                "'{token}' is not a pagination token from this server"
            ))
        })
}

pub fn token(count: u64) -> String {
    format!("t{count}")
}

/// How many stored events one page may look at, as a multiple of its limit,
/// before it stops looking for visible ones.
const SCAN_FACTOR: usize = 10;

impl Rooms {
    /// The client format of an event as `viewer` (user, device) sees it, with
    /// its relations bundled.
    pub fn client_event(
        &self,
        pdu: &Pdu,
        meta: &EventMeta,
        viewer: Option<(&UserId, &str)>,
    ) -> Result<Value> {
        Ok(pdu.to_client(self.unsigned_for(pdu, meta, viewer, true)?))
    }

    /// The same, serialised: what pages of events are built from.
    pub fn client_event_json(
        &self,
        pdu: &Pdu,
        meta: &EventMeta,
        viewer: Option<(&UserId, &str)>,
    ) -> Result<String> {
        pdu.to_client_json(&self.unsigned_for(pdu, meta, viewer, true)?)
    }

    /// The client format without bundled relations (for events inside a bundle).
    pub(super) fn client_event_plain(&self, pdu: &Pdu, meta: &EventMeta) -> Result<Value> {
        Ok(pdu.to_client(self.unsigned_for(pdu, meta, None, false)?))
    }

    fn unsigned_for(
        &self,
        pdu: &Pdu,
        meta: &EventMeta,
        viewer: Option<(&UserId, &str)>,
        bundle: bool,
    ) -> Result<Map<String, Value>> {
        let mut unsigned = Map::new();
        unsigned.insert(
            "age".into(),
            json!(now_ms().saturating_sub(pdu.origin_server_ts())),
        );
        if let (Some((user, device)), Some((txn_device, txn))) = (viewer, &meta.txn)
            && user == pdu.sender()
            && device == txn_device
        {
            unsigned.insert("transaction_id".into(), json!(txn));
        }
        if let Some(prev) = meta.replaces_state.and_then(|s| self.pdu(s).ok().flatten()) {
            unsigned.insert("prev_content".into(), prev.content_value());
            unsigned.insert("prev_sender".into(), json!(prev.sender()));
            unsigned.insert("replaces_state".into(), json!(prev.event_id));
        }
        if let Some(by) = &meta.redacted_by
            && let Some(redaction) = self.pdu_by_id(by)?
        {
            let mut because = redaction.to_client(Map::new());
            because.as_object_mut().map(|o| o.remove("unsigned"));
            unsigned.insert("redacted_because".into(), because);
        }
        if bundle && let Some(relations) = self.bundled_relations(pdu, meta, viewer.map(|v| v.0))? {
            unsigned.insert("m.relations".into(), relations);
        }
        Ok(unsigned)
    }

    pub(super) fn visibility_in(&self, state: &StateMap) -> Result<Visibility> {
        let setting = self
            .state_event(state, "m.room.history_visibility", "")?
            .and_then(|e| e.content_str("history_visibility"));
        Ok(match setting.as_deref() {
            Some("world_readable") => Visibility::WorldReadable,
            Some("invited") => Visibility::Invited,
            Some("joined") => Visibility::Joined,
            _ => Visibility::Shared,
        })
    }

    pub(super) fn membership_in(&self, state: &StateMap, user: &UserId) -> Result<Option<String>> {
        Ok(self
            .state_event(state, "m.room.member", user.as_str())?
            .and_then(|e| e.content_str("membership")))
    }

    /// The spec's history visibility rules for one event.
    pub(super) fn can_see(
        &self,
        user: &UserId,
        pdu: &Pdu,
        meta: &EventMeta,
        joined_until: Option<u64>,
    ) -> Result<bool> {
        self.can_see_with(user, pdu, meta, joined_until, None)
    }

    /// `can_see`, remembering per snapshot what it looked up (for pages of events).
    pub(super) fn can_see_with(
        &self,
        user: &UserId,
        pdu: &Pdu,
        meta: &EventMeta,
        joined_until: Option<u64>,
        memo: Option<&mut HashMap<u64, VisibilityAt>>,
    ) -> Result<bool> {
        let (visibility, membership_in_state) = match memo {
            Some(memo) => match memo.get(&meta.state_before) {
                Some(found) => found.clone(),
                None => {
                    let found = self.visibility_at(meta.state_before, user)?;
                    memo.insert(meta.state_before, found.clone());
                    found
                }
            },
            None => self.visibility_at(meta.state_before, user)?,
        };
        if visibility == Visibility::WorldReadable {
            return Ok(true);
        }
        // Users always see their own membership changes (their join, their
        // invite, their kick), as Synapse does.
        let own_member_event = pdu.state_key() == Some(user.as_str())
            && *pdu.kind() == ruma::events::TimelineEventType::RoomMember;
        if own_member_event {
            return Ok(true);
        }
        Ok(match membership_in_state.as_deref() {
            Some("join") => true,
            Some("invite") if visibility == Visibility::Invited => true,
            // Shared history: visible to those who were joined at some point after it.
            _ => {
                visibility == Visibility::Shared
                    && joined_until.is_some_and(|until| until > meta.count)
            }
        })
    }

    /// History visibility and the user's membership in a state snapshot (cached:
    /// snapshots never change).
    fn visibility_at(
        &self,
        state_hash: u64,
        user: &UserId,
    ) -> Result<(Visibility, Option<String>)> {
        let key = (state_hash, user.to_owned());
        if let Some(found) = self.visibility.lock().get(&key) {
            return Ok(found.clone());
        }
        let state = self.state.load(state_hash)?;
        let found = (
            self.visibility_in(&state)?,
            self.membership_in(&state, user)?,
        );
        self.visibility.lock().put(key, found.clone());
        Ok(found)
    }

    /// Until which count the user was (or is) joined, for shared history:
    /// `u64::MAX` while joined; the count of the leaving event if they left a
    /// room they had joined; `None` if they were never joined.
    pub(super) fn joined_until(&self, room: &RoomId, user: &UserId) -> Result<Option<u64>> {
        let Some(record) = self
            .db
            .get(USERIDROOMID_MEMBERSHIP, &(user.to_owned(), room.to_owned()))?
        else {
            return Ok(None);
        };
        if record.membership == "join" {
            return Ok(Some(u64::MAX));
        }
        let Some(meta) = self.event_meta(record.event)? else {
            return Ok(None);
        };
        let before = self.state.load(meta.state_before)?;
        Ok((self.membership_in(&before, user)?.as_deref() == Some("join")).then_some(record.count))
    }

    /// Whether the user may read the room's history at all.
    pub(super) fn ensure_can_read(&self, room: &RoomId, user: &UserId) -> Result<()> {
        let meta = self.require_meta(room)?;
        let state = self.state.load(meta.current_state)?;
        let member_ever = self
            .db
            .contains(USERIDROOMID_MEMBERSHIP, &(user.to_owned(), room.to_owned()))?;
        if member_ever || self.visibility_in(&state)? == Visibility::WorldReadable {
            Ok(())
        } else {
            Err(Error::forbidden("You are not a member of this room"))
        }
    }

    /// One event, if the user may see it (404 otherwise, as the spec asks).
    pub fn event_for(
        &self,
        room: &RoomId,
        event: &EventId,
        viewer: (&UserId, &str),
    ) -> Result<Value> {
        let not_found = || Error::not_found("Event not found");
        let short = self.short_event_id(event)?.ok_or_else(not_found)?;
        let meta = self.event_meta(short)?.ok_or_else(not_found)?;
        let pdu = self.pdu(short)?.ok_or_else(not_found)?;
        if pdu.room_id != room {
            return Err(not_found());
        }
        let until = self.joined_until(room, viewer.0)?;
        if !self.can_see(viewer.0, &pdu, &meta, until)? {
            return Err(not_found());
        }
        self.client_event(&pdu, &meta, Some(viewer))
    }

    /// A page of `/messages`.
    #[allow(clippy::too_many_arguments)]
    pub fn messages(
        &self,
        room: &RoomId,
        viewer: (&UserId, &str),
        from: Option<&str>,
        to: Option<&str>,
        dir: Direction,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<MessagesPage> {
        self.ensure_can_read(room, viewer.0)?;
        let meta = self.require_meta(room)?;
        let limit = limit.clamp(1, 1000);
        let from = from.map(parse_token).transpose()?;
        let to = to.map(parse_token).transpose()?;
        let start = match (from, dir) {
            (Some(n), _) => n,
            (None, Direction::Backward) => u64::MAX,
            (None, Direction::Forward) => 0,
        };
        let room_prefix = prefix(&(meta.short,));
        let budget = limit * SCAN_FACTOR;
        let forward = dir == Direction::Forward;
        // The room's recent window in memory answers most pages; RocksDB the rest.
        let cached = self
            .timelines
            .get(meta.short)?
            .lock()
            .page(start, forward, budget);
        let rows: Box<dyn Iterator<Item = Result<TimelineRow>>> = match cached {
            Some(entries) => Box::new(
                entries
                    .into_iter()
                    .map(move |(count, short)| Ok(((meta.short, count), short))),
            ),
            None => Box::new(
                self.db
                    .iter(
                        SHORTROOMIDCOUNT_SHORTEVENTID,
                        &room_prefix,
                        &(meta.short, start).encode(),
                        forward,
                    )
                    .take(budget),
            ),
        };
        let mut rows = rows.peekable();
        let within_to = |count: u64| match (to, dir) {
            (Some(to), Direction::Backward) => count >= to,
            (Some(to), Direction::Forward) => count < to,
            (None, _) => true,
        };
        let until = self.joined_until(room, viewer.0)?;
        let mut chunk = Vec::new();
        let mut senders = BTreeSet::new();
        let mut last_count = None;
        let mut first_state = None;
        let mut memo = HashMap::new();
        while chunk.len() < limit {
            let Some(row) = rows.next_if(|r| {
                r.as_ref().is_ok_and(|((_, count), _)| within_to(*count)) || r.is_err()
            }) else {
                break;
            };
            let ((_, count), short) = row?;
            last_count = Some(count);
            let (Some(pdu), Some(event_meta)) = (self.pdu(short)?, self.event_meta_shared(short)?)
            else {
                continue;
            };
            if !filter.matches(&pdu)
                || !self.can_see_with(viewer.0, &pdu, &event_meta, until, Some(&mut memo))?
            {
                continue;
            }
            first_state.get_or_insert(event_meta.state_before);
            senders.insert(pdu.sender().to_owned());
            chunk.push(self.client_event_json(&pdu, &event_meta, Some(viewer))?);
        }
        // More may follow if another stored event lies within `to`, or if the
        // scan budget ran out on events this user may not see.
        let budget_spent = rows.peek().is_none() && last_count.is_some() && chunk.len() < limit;
        let next_within = rows
            .peek()
            .is_some_and(|r| r.as_ref().is_ok_and(|((_, c), _)| within_to(*c)));
        let more =
            next_within || (budget_spent && self.has_more_rows(meta.short, last_count, dir, to)?);
        let end = match (last_count, more) {
            (Some(c), true) => Some(token(match dir {
                Direction::Backward => c,
                Direction::Forward => c + 1,
            })),
            _ => None,
        };
        let state = match (filter.lazy_load_members, first_state) {
            (true, Some(hash)) => {
                let state = self.state.load(hash)?;
                let mut members = Vec::new();
                for sender in &senders {
                    if let Some(member) =
                        self.state_event(&state, "m.room.member", sender.as_str())?
                    {
                        let short = self.short_event_id(&member.event_id)?.unwrap_or_default();
                        if let Some(m) = self.event_meta(short)? {
                            members.push(self.client_event(&member, &m, None)?);
                        }
                    }
                }
                members
            }
            _ => Vec::new(),
        };
        let start = match (from, dir) {
            (Some(n), _) => token(n),
            (None, Direction::Backward) => token(self.db.visible_count() + 1),
            (None, Direction::Forward) => token(0),
        };
        Ok(MessagesPage {
            chunk,
            start,
            end,
            state,
        })
    }

    /// Whether the timeline holds another event past `last` (within `to`).
    fn has_more_rows(
        &self,
        short_room: u64,
        last: Option<u64>,
        dir: Direction,
        to: Option<u64>,
    ) -> Result<bool> {
        let Some(last) = last else { return Ok(false) };
        let start = match dir {
            Direction::Backward => last,
            Direction::Forward => last + 1,
        };
        let next = self
            .db
            .iter(
                SHORTROOMIDCOUNT_SHORTEVENTID,
                &prefix(&(short_room,)),
                &(short_room, start).encode(),
                dir == Direction::Forward,
            )
            .next()
            .transpose()?;
        Ok(next.is_some_and(|((_, c), _)| match (to, dir) {
            (Some(to), Direction::Backward) => c >= to,
            (Some(to), Direction::Forward) => c < to,
            (None, _) => true,
        }))
    }

    /// The state the user may see: the current state while joined (or in a
    /// world-readable room), the state when they left otherwise.
    /// The count of the user's leave (or ban), unless the room is world-readable.
    fn left_at(&self, room: &RoomId, user: &UserId) -> Result<Option<u64>> {
        let record = self
            .db
            .get(USERIDROOMID_MEMBERSHIP, &(user.to_owned(), room.to_owned()))?;
        match record {
            Some(r) if r.membership == "leave" || r.membership == "ban" => {
                let meta = self.require_meta(room)?;
                let current = self.state.load(meta.current_state)?;
                let readable = self.visibility_in(&current)? == Visibility::WorldReadable;
                Ok((!readable).then_some(r.count))
            }
            _ => Ok(None),
        }
    }

    pub(super) fn visible_state(&self, room: &RoomId, user: &UserId) -> Result<Arc<StateMap>> {
        let meta = self.require_meta(room)?;
        let current = self.state.load(meta.current_state)?;
        let record = self
            .db
            .get(USERIDROOMID_MEMBERSHIP, &(user.to_owned(), room.to_owned()))?;
        match record {
            Some(r) if r.membership == "join" => Ok(current),
            _ if self.visibility_in(&current)? == Visibility::WorldReadable => Ok(current),
            Some(r) if r.membership == "leave" || r.membership == "ban" => {
                let Some(leave) = self.event_meta(r.event)? else {
                    return Err(Error::forbidden("No access"));
                };
                let before = self.state.load(leave.state_before)?;
                let was_joined = self.membership_in(&before, user)?.as_deref() == Some("join");
                if !was_joined {
                    return Err(Error::forbidden("You were never joined to this room"));
                }
                // The state as they left it, including their leave.
                let mut state = (*before).clone();
                let key = self
                    .state
                    .short_key_or_create("m.room.member", user.as_str())?;
                state.insert(key, r.event);
                Ok(Arc::new(state))
            }
            _ => Err(Error::forbidden("You are not a member of this room")),
        }
    }

    /// Every state event the user may see, in client format.
    pub fn state_events_for(&self, room: &RoomId, user: &UserId) -> Result<Vec<Value>> {
        let state = self.visible_state(room, user)?;
        self.state_events(&state)
    }

    fn state_events(&self, state: &StateMap) -> Result<Vec<Value>> {
        let mut events = Vec::with_capacity(state.len());
        for &short in state.values() {
            if let (Some(pdu), Some(meta)) = (self.pdu(short)?, self.event_meta(short)?) {
                events.push(self.client_event(&pdu, &meta, None)?);
            }
        }
        Ok(events)
    }

    /// One state event's content.
    pub fn state_content_for(
        &self,
        room: &RoomId,
        user: &UserId,
        kind: &str,
        key: &str,
    ) -> Result<Value> {
        let state = self.visible_state(room, user)?;
        self.state_event(&state, kind, key)?
            .map(|e| e.content_value())
            .ok_or_else(|| {
                Error::not_found(format!("The room has no {kind} state with key '{key}'"))
            })
    }

    /// Member events, optionally at a pagination token and filtered by membership.
    pub fn members_for(
        &self,
        room: &RoomId,
        user: &UserId,
        at: Option<&str>,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut state = self.visible_state(room, user)?;
        if let Some(at) = at {
            let mut count = parse_token(at)?;
            // A member who left sees no further than their leave.
            if let Some(left) = self.left_at(room, user)? {
                count = count.min(left);
            }
            let meta = self.require_meta(room)?;
            let before = self.db.scan_rev(
                SHORTROOMIDCOUNT_SHORTEVENTID,
                &prefix(&(meta.short,)),
                &(meta.short, count).encode(),
                1,
            )?;
            if let Some((_, short)) = before.first()
                && let Some(event_meta) = self.event_meta(*short)?
            {
                let mut at_state = (*self.state.load(event_meta.state_before)?).clone();
                if let Some(pdu) = self.pdu(*short)?
                    && let Some(key) = pdu.state_key()
                {
                    at_state.insert(
                        self.state
                            .short_key_or_create(&pdu.kind().to_string(), key)?,
                        *short,
                    );
                }
                state = Arc::new(at_state);
            }
        }
        let mut members = Vec::new();
        for (&key, &short) in state.iter() {
            if self.state.key_of(key)?.0 != "m.room.member" {
                continue;
            }
            let (Some(pdu), Some(meta)) = (self.pdu(short)?, self.event_meta(short)?) else {
                continue;
            };
            let m = pdu.content_str("membership").unwrap_or_default();
            if membership.is_some_and(|want| want != m)
                || not_membership.is_some_and(|not| not == m)
            {
                continue;
            }
            members.push(self.client_event(&pdu, &meta, None)?);
        }
        Ok(members)
    }

    /// Joined members with their display names and avatars.
    pub fn joined_members_for(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Vec<(OwnedUserId, Value)>> {
        if !self.is_joined(room, user)? {
            let meta = self.require_meta(room)?;
            let state = self.state.load(meta.current_state)?;
            if self.visibility_in(&state)? != Visibility::WorldReadable {
                return Err(Error::forbidden("You are not a member of this room"));
            }
        }
        let meta = self.require_meta(room)?;
        let state = self.state.load(meta.current_state)?;
        let mut joined = Vec::new();
        for (&key, &short) in state.iter() {
            let (kind, member) = self.state.key_of(key)?;
            if kind != "m.room.member" {
                continue;
            }
            let Some(pdu) = self.pdu(short)? else {
                continue;
            };
            if pdu.content_str("membership").as_deref() != Some("join") {
                continue;
            }
            let Ok(member) = UserId::parse(member) else {
                continue;
            };
            let content = pdu.content_value();
            joined.push((
                member,
                json!({ "display_name": content.get("displayname"), "avatar_url": content.get("avatar_url") }),
            ));
        }
        Ok(joined)
    }
}
