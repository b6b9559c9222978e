//! The parts of a Matrix filter that `/sync` applies.

use ruma::{
    OwnedRoomId,
    api::client::filter::{Filter, FilterDefinition, RoomEventFilter},
};

use crate::rooms::{EventFilter, Pdu};

/// The spec's default timeline limit.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
const MAX_TIMELINE_LIMIT: usize = 1_000;

#[derive(Debug, Clone)]
pub struct SyncFilter {
    pub timeline_limit: usize,
    pub include_leave: bool,
    pub lazy_load_members: bool,
    rooms: Option<Vec<OwnedRoomId>>,
    not_rooms: Vec<OwnedRoomId>,
    timeline: EventFilter,
    state: EventFilter,
    account_data: Option<Filter>,
}

impl Default for SyncFilter {
    fn default() -> Self {
        Self::from_definition(&FilterDefinition::default())
    }
}

fn event_filter(f: &RoomEventFilter) -> EventFilter {
    EventFilter {
        types: f.types.clone(),
        not_types: f.not_types.clone(),
        senders: f.senders.clone(),
        not_senders: f.not_senders.clone(),
        lazy_load_members: !f.lazy_load_options.is_disabled(),
    }
}

impl SyncFilter {
    pub fn from_definition(def: &FilterDefinition) -> Self {
        let room = &def.room;
        let timeline_limit = room
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| {
                usize::try_from(u64::from(l)).unwrap_or(MAX_TIMELINE_LIMIT)
            })
            .min(MAX_TIMELINE_LIMIT);
        Self {
            timeline_limit,
            include_leave: room.include_leave,
            lazy_load_members: !room.state.lazy_load_options.is_disabled(),
            rooms: room.rooms.clone(),
            not_rooms: room.not_rooms.clone(),
            timeline: event_filter(&room.timeline),
            state: event_filter(&room.state),
            account_data: Some(def.account_data.clone()),
        }
    }

    pub fn room_allowed(&self, room: &OwnedRoomId) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.contains(room)) && !self.not_rooms.contains(room)
    }

    pub fn timeline_allows(&self, pdu: &Pdu) -> bool {
        self.timeline.matches(pdu)
    }

    pub fn state_allows(&self, pdu: &Pdu) -> bool {
        self.state.matches(pdu)
    }

    pub fn account_data_allows(&self, kind: &str) -> bool {
        let Some(filter) = &self.account_data else {
            return true;
        };
        let matches = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => pattern == kind,
        };
        filter.types.as_ref().is_none_or(|t| t.iter().any(matches))
            && !filter.not_types.iter().any(matches)
    }
}
