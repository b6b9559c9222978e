//! Rooms: events as signed PDUs, their authorization, state snapshots, the
//! timeline, membership and the read paths over them.
//!
//! Every event of a room is appended under that room's lock, so a room has one
//! linear order; each event's `prev_events` are the room's forward extremities
//! and its state is the room's current state.

mod aliases;
mod append;
mod changes;
mod create;
mod hierarchy;
mod incoming;
mod membership;
mod pdu;
mod read;
mod relations;
mod resolve;
mod search;
mod state;
#[cfg(test)]
pub(crate) mod test_support;
mod timeline;
mod upgrade;
pub mod user_directory;

use std::{collections::HashMap, num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId};
use serde::{Deserialize, Serialize};

pub use self::{
    aliases::{AliasRecord, PublicRoom},
    append::EventDraft,
    changes::{StoredEvent, TimelineSlice, VisibilityMemo},
    create::{CreateRoom, Preset},
    pdu::Pdu,
    read::{Direction, EventFilter, MessagesPage, Visibility, parse_token, token},
    relations::thread_root_of,
    search::{SearchHit, tokenize},
    state::{StateDiff, StateMap},
};
use crate::{
    error::{Error, Result},
    federation::keys::SigningKey,
    storage::{
        EVENTID_SHORTEVENTID, Engine, JsonValue, ROOMID_META, Raw, SHORTEVENTID_EVENTID,
        SHORTEVENTID_META, SHORTEVENTID_PDU, SHORTROOMID_ROOMID,
    },
};

/// What bigd keeps per room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomMeta {
    pub short: u64,
    pub version: RoomVersionId,
    /// The state snapshot after the last event.
    pub current_state: u64,
    /// Forward extremities: the events new events reference as `prev_events`.
    pub leaves: Vec<OwnedEventId>,
    pub created_ts: u64,
}

impl JsonValue for RoomMeta {}

/// What bigd keeps per event besides its PDU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub short_room: u64,
    /// Position in the room's timeline (a global count).
    pub count: u64,
    /// The state snapshot before this event.
    pub state_before: u64,
    /// For a state event: the event it replaced in the state, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_by: Option<OwnedEventId>,
    /// The sending device and its transaction id (for `unsigned.transaction_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<(String, String)>,
    /// Whether other events relate to this one (so reads skip the relations
    /// index for the many events that have none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_relations: bool,
}

impl JsonValue for EventMeta {}

/// A user's membership in a room, for `joined_rooms` and (later) sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: String,
    pub count: u64,
    pub event: u64,
    #[serde(default)]
    pub forgotten: bool,
    /// The count at which this membership began: a profile change (join to
    /// join) moves `count` but not this. 0 in records written before it existed.
    #[serde(default)]
    pub since: u64,
}

impl MembershipRecord {
    /// When the user entered the current membership.
    pub fn began(&self) -> u64 {
        if self.since == 0 {
            self.count
        } else {
            self.since
        }
    }
}

impl JsonValue for MembershipRecord {}

const PDU_CACHE: usize = 20_000;
const META_CACHE: usize = 50_000;
const STATE_CACHE: usize = 2_000;
const VISIBILITY_CACHE: usize = 20_000;
/// Users whose joined rooms are kept in memory.
const JOINED_CACHE: usize = 10_000;
/// State snapshots whose joined local members are kept.
const LOCAL_MEMBERS_CACHE: usize = 1_024;

/// Joined local members of a room and their display names.
pub type LocalMembers = Arc<Vec<(ruma::OwnedUserId, String)>>;

/// History visibility and a user's membership in one state snapshot.
type VisibilityAt = (Visibility, Option<String>);

/// Serialises appends to one room.
#[derive(Debug, Default)]
struct RoomHandle {
    lock: tokio::sync::Mutex<()>,
    meta: Mutex<Option<RoomMeta>>,
}

pub struct Rooms {
    db: Engine,
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    handles: Mutex<HashMap<OwnedRoomId, Arc<RoomHandle>>>,
    pdus: Mutex<LruCache<u64, Arc<Pdu>>>,
    metas: Mutex<LruCache<u64, Arc<EventMeta>>>,
    visibility: Mutex<LruCache<(u64, ruma::OwnedUserId), VisibilityAt>>,
    /// Joined local members with display names, per state snapshot
    /// (snapshots never change): every new event's push evaluation asks.
    local_members: Mutex<LruCache<u64, LocalMembers>>,
    /// Users' joined rooms for hot paths that tolerate a moment's lag
    /// (`joined_rooms_cached`).
    joined: crate::storage::WatchedCache<ruma::OwnedUserId, Arc<Vec<OwnedRoomId>>>,
    short_rooms: Mutex<HashMap<u64, OwnedRoomId>>,
    /// Per short room id, a count at or above its newest event: noted before
    /// an event's batch commits, so a reader of the visible count never finds
    /// it behind (see `newest_count_at_most`).
    newest: Mutex<HashMap<u64, u64>>,
    timelines: timeline::Timelines,
    state: state::StateStore,
    /// Serialises alias creation and removal (check, then write).
    alias_lock: Mutex<()>,
    /// Who gets notified of new events, and how.
    push: Arc<crate::push::Push>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").finish_non_exhaustive()
    }
}

impl Rooms {
    pub fn new(
        db: Engine,
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        push: Arc<crate::push::Push>,
    ) -> Self {
        Self {
            state: state::StateStore::new(db.clone(), STATE_CACHE),
            timelines: timeline::Timelines::new(db.clone()),
            db,
            server_name,
            key,
            handles: Mutex::new(HashMap::new()),
            pdus: Mutex::new(LruCache::new(
                NonZeroUsize::new(PDU_CACHE).expect("non-zero"),
            )),
            metas: Mutex::new(LruCache::new(
                NonZeroUsize::new(META_CACHE).expect("non-zero"),
            )),
            visibility: Mutex::new(LruCache::new(
                NonZeroUsize::new(VISIBILITY_CACHE).expect("non-zero"),
            )),
            local_members: Mutex::new(LruCache::new(
                NonZeroUsize::new(LOCAL_MEMBERS_CACHE).expect("non-zero"),
            )),
            joined: crate::storage::WatchedCache::new(JOINED_CACHE),
            short_rooms: Mutex::new(HashMap::new()),
            newest: Mutex::new(HashMap::new()),
            alias_lock: Mutex::new(()),
            push,
        }
    }

    fn handle(&self, room: &RoomId) -> Arc<RoomHandle> {
        self.handles
            .lock()
            .entry(room.to_owned())
            .or_default()
            .clone()
    }

    /// The room's metadata, or `None` if this server does not know the room.
    pub fn meta(&self, room: &RoomId) -> Result<Option<RoomMeta>> {
        let handle = self.handles.lock().get(room).cloned();
        if let Some(meta) = handle.and_then(|h| h.meta.lock().clone()) {
            return Ok(Some(meta));
        }
        // Unknown rooms get no handle, so requests for random ids cost no memory.
        let meta = self.db.get(ROOMID_META, &room.to_owned())?;
        if let Some(meta) = &meta {
            let handle = self.handle(room);
            let mut cached = handle.meta.lock();
            // An append may have cached a newer one meanwhile.
            if cached.is_none() {
                *cached = Some(meta.clone());
            }
        }
        Ok(meta)
    }

    pub fn require_meta(&self, room: &RoomId) -> Result<RoomMeta> {
        self.meta(room)?
            .ok_or_else(|| Error::not_found("This server does not know that room"))
    }

    pub fn exists(&self, room: &RoomId) -> Result<bool> {
        Ok(self.meta(room)?.is_some())
    }

    pub fn short_event_id(&self, event: &EventId) -> Result<Option<u64>> {
        self.db.get(EVENTID_SHORTEVENTID, &event.to_owned())
    }

    pub fn event_meta(&self, short: u64) -> Result<Option<EventMeta>> {
        Ok(self.event_meta_shared(short)?.map(|m| (*m).clone()))
    }

    /// An event's metadata without copying it (for hot read paths).
    pub fn event_meta_shared(&self, short: u64) -> Result<Option<Arc<EventMeta>>> {
        if let Some(meta) = self.metas.lock().get(&short) {
            return Ok(Some(meta.clone()));
        }
        let Some(meta) = self.db.get(SHORTEVENTID_META, &short)? else {
            return Ok(None);
        };
        // Insert only if absent: a writer may have put a newer one meanwhile.
        Ok(Some(
            self.metas
                .lock()
                .get_or_insert(short, || Arc::new(meta))
                .clone(),
        ))
    }

    /// Publishes committed changes to the caches (writers call this after commit).
    fn cache_committed(&self, metas: Vec<(u64, EventMeta)>, pdus: Vec<(u64, Arc<Pdu>)>) {
        let mut cache = self.metas.lock();
        for (short, meta) in metas {
            cache.put(short, Arc::new(meta));
        }
        drop(cache);
        let mut cache = self.pdus.lock();
        for (short, pdu) in pdus {
            cache.put(short, pdu);
        }
    }

    /// Loads an event by short id (cached).
    pub fn pdu(&self, short: u64) -> Result<Option<Arc<Pdu>>> {
        if let Some(pdu) = self.pdus.lock().get(&short) {
            return Ok(Some(pdu.clone()));
        }
        let Some(Raw(json)) = self.db.get(SHORTEVENTID_PDU, &short)? else {
            return Ok(None);
        };
        let Some(Raw(event_id)) = self.db.get(SHORTEVENTID_EVENTID, &short)? else {
            return Ok(None);
        };
        let Some(meta) = self.event_meta(short)? else {
            return Ok(None);
        };
        let event_id = OwnedEventId::try_from(String::from_utf8_lossy(&event_id).into_owned())
            .map_err(|e| Error::internal(format!("stored event id is invalid: {e}")))?;
        let room = self.room_of_short(meta.short_room)?;
        let json =
            serde_json::value::RawValue::from_string(String::from_utf8_lossy(&json).into_owned())?;
        let pdu = Arc::new(Pdu::from_json(event_id, room, json)?);
        // Insert only if absent, as for metadata.
        Ok(Some(self.pdus.lock().get_or_insert(short, || pdu).clone()))
    }

    pub fn pdu_by_id(&self, event: &EventId) -> Result<Option<Arc<Pdu>>> {
        match self.short_event_id(event)? {
            Some(short) => self.pdu(short),
            None => Ok(None),
        }
    }

    fn room_of_short(&self, short_room: u64) -> Result<OwnedRoomId> {
        if let Some(room) = self.short_rooms.lock().get(&short_room) {
            return Ok(room.clone());
        }
        let Raw(bytes) = self
            .db
            .get(SHORTROOMID_ROOMID, &short_room)?
            .ok_or_else(|| Error::internal(format!("no room has short id {short_room}")))?;
        let room = OwnedRoomId::try_from(String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|e| Error::internal(format!("stored room id is invalid: {e}")))?;
        self.short_rooms.lock().insert(short_room, room.clone());
        Ok(room)
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn db(&self) -> &Engine {
        &self.db
    }
}
