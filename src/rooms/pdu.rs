//! A stored event: the signed federation PDU plus what bigd knows about it, and
//! its client format.

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    UserId, events::TimelineEventType,
};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value, value::RawValue};

use crate::error::{Error, Result};

/// The fields of a PDU that the server reasons about. The exact signed JSON is
/// kept next to it (`json`), so nothing is lost by parsing.
#[derive(Debug, Clone, Deserialize)]
struct PduFields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
}

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room, also for a v12 create event (whose JSON has no `room_id`).
    pub room_id: OwnedRoomId,
    fields: PduFields,
    /// `content.redacts` (v11+) or the top-level `redacts` (older versions).
    redacts: Option<OwnedEventId>,
    /// The signed PDU as canonical JSON.
    pub json: Box<RawValue>,
    /// Parsed once on first use: events are read far more often than written.
    content_parsed: OnceLock<Value>,
    client_base: OnceLock<Map<String, Value>>,
    /// The client JSON without `unsigned` and its closing brace, serialised once.
    client_head: OnceLock<String>,
}

impl Pdu {
    pub fn from_json(
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        json: Box<RawValue>,
    ) -> Result<Self> {
        let fields: PduFields = serde_json::from_str(json.get()).map_err(|e| {
            Error::internal(format!("stored event {event_id} is not a valid PDU: {e}"))
        })?;
        let redacts = fields.redacts.clone().or_else(|| {
            #[derive(Deserialize)]
            struct Redacts {
                redacts: Option<OwnedEventId>,
            }
            if fields.kind == TimelineEventType::RoomRedaction {
                serde_json::from_str::<Redacts>(fields.content.get())
                    .ok()
                    .and_then(|r| r.redacts)
            } else {
                None
            }
        });
        Ok(Self {
            event_id,
            room_id,
            fields,
            redacts,
            json,
            content_parsed: OnceLock::new(),
            client_base: OnceLock::new(),
            client_head: OnceLock::new(),
        })
    }

    pub fn sender(&self) -> &UserId {
        &self.fields.sender
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    pub fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    pub fn content(&self) -> &RawValue {
        &self.fields.content
    }

    pub fn content_value(&self) -> Value {
        self.parsed_content().clone()
    }

    /// The content as a JSON value, parsed once.
    pub fn parsed_content(&self) -> &Value {
        self.content_parsed.get_or_init(|| {
            serde_json::from_str(self.fields.content.get()).unwrap_or(Value::Object(Map::new()))
        })
    }

    pub fn depth(&self) -> u64 {
        self.fields.depth.into()
    }

    pub fn origin_server_ts(&self) -> u64 {
        self.fields.origin_server_ts.get().into()
    }

    pub fn redacts_id(&self) -> Option<&EventId> {
        self.redacts.as_deref()
    }

    pub fn prev_event_ids(&self) -> &[OwnedEventId] {
        &self.fields.prev_events
    }

    pub fn auth_event_ids(&self) -> &[OwnedEventId] {
        &self.fields.auth_events
    }

    /// A string field of the content (`membership`, `body`, ...).
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_value()
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The client format: the PDU without its federation fields, with `event_id`,
    /// `room_id` and the given `unsigned` data.
    pub fn to_client(&self, unsigned: Map<String, Value>) -> Value {
        let mut event = self
            .client_base
            .get_or_init(|| self.client_base_map())
            .clone();
        event.insert("unsigned".into(), Value::Object(unsigned));
        Value::Object(event)
    }

    /// The client format as serialised JSON: the cached head plus `unsigned`.
    /// Pages of events are served from this without building JSON values.
    pub fn to_client_json(&self, unsigned: &Map<String, Value>) -> Result<String> {
        let head = self.client_head.get_or_init(|| {
            let base = self.client_base.get_or_init(|| self.client_base_map());
            let mut head = serde_json::to_string(base).expect("JSON maps serialise");
            head.pop(); // the closing brace; the map is never empty
            head
        });
        let unsigned = serde_json::to_string(unsigned)?;
        let mut out = String::with_capacity(head.len() + unsigned.len() + 16);
        out.push_str(head);
        out.push_str(",\"unsigned\":");
        out.push_str(&unsigned);
        out.push('}');
        Ok(out)
    }

    fn client_base_map(&self) -> Map<String, Value> {
        let mut event: Map<String, Value> =
            serde_json::from_str(self.json.get()).unwrap_or_default();
        for field in [
            "auth_events",
            "prev_events",
            "depth",
            "hashes",
            "signatures",
            "origin",
            "membership",
            "prev_state",
            "unsigned",
        ] {
            event.remove(field);
        }
        event.insert("event_id".into(), Value::String(self.event_id.to_string()));
        event.insert("room_id".into(), Value::String(self.room_id.to_string()));
        if let Some(redacts) = &self.redacts {
            // Clients read `redacts` at the top level in every room version.
            event.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        event
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.fields.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.fields.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.fields.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    fn content(&self) -> &RawValue {
        &self.fields.content
    }

    fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.fields.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.fields.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        // Rejected events are never stored as room events.
        false
    }
}
