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
    /// Whether threaded notification counts are reported apart (opt-in).
    pub unread_thread_notifications: bool,
    rooms: Option<Vec<OwnedRoomId>>,
    not_rooms: Vec<OwnedRoomId>,
    timeline: EventFilter,
    state: EventFilter,
    account_data: Option<Filter>,
    presence: Option<Filter>,
    /// `event_fields`: which fields of each event to send (dotted paths).
    event_fields: Option<Vec<Vec<String>>>,
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
            unread_thread_notifications: room.timeline.unread_thread_notifications,
            rooms: room.rooms.clone(),
            not_rooms: room.not_rooms.clone(),
            timeline: event_filter(&room.timeline),
            state: event_filter(&room.state),
            account_data: Some(def.account_data.clone()),
            presence: Some(def.presence.clone()),
            event_fields: def
                .event_fields
                .as_ref()
                .map(|fields| fields.iter().map(|f| split_path(f)).collect()),
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

    /// The presence filter: `senders`/`not_senders` and `types` apply to `m.presence` events.
    pub fn presence_allows(&self, sender: &ruma::UserId) -> bool {
        let Some(filter) = &self.presence else {
            return true;
        };
        let type_ok =
            |pattern: &String| pattern == "m.presence" || pattern == "*" || pattern == "m.*";
        filter
            .senders
            .as_ref()
            .is_none_or(|s| s.iter().any(|u| u == sender))
            && !filter.not_senders.iter().any(|u| u == sender)
            && filter.types.as_ref().is_none_or(|t| t.iter().any(type_ok))
            && !filter.not_types.iter().any(type_ok)
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

/// A dotted field path; `\.` is a literal dot in a key.
fn split_path(path: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                parts.last_mut().expect("never empty").push('.');
                chars.next();
            }
            '.' => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

impl SyncFilter {
    /// An event's client JSON as the filter wants it: whole, or only the
    /// `event_fields` it names.
    pub fn project(&self, event: String) -> crate::error::Result<Box<serde_json::value::RawValue>> {
        let Some(fields) = &self.event_fields else {
            return Ok(serde_json::value::RawValue::from_string(event)?);
        };
        let full: serde_json::Value = serde_json::from_str(&event)?;
        let mut kept = serde_json::Value::Object(serde_json::Map::new());
        for path in fields {
            let mut source = &full;
            let mut found = true;
            for key in path {
                match source.get(key) {
                    Some(next) => source = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if !found {
                continue;
            }
            insert_path(&mut kept, path, source.clone());
        }
        Ok(serde_json::value::to_raw_value(&kept)?)
    }
}

fn insert_path(target: &mut serde_json::Value, path: &[String], value: serde_json::Value) {
    let (Some((first, rest)), Some(object)) = (path.split_first(), target.as_object_mut()) else {
        return;
    };
    if rest.is_empty() {
        object.insert(first.clone(), value);
    } else {
        let child = object
            .entry(first.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        insert_path(child, rest, value);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_paths_with_escapes() {
        assert_eq!(super::split_path("content.body"), vec!["content", "body"]);
        assert_eq!(
            super::split_path("content.m\\.relates_to"),
            vec!["content", "m.relates_to"]
        );
        assert_eq!(super::split_path("type"), vec!["type"]);
    }
}
