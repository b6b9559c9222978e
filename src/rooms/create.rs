//! `createRoom`: the create event, the creator's join, power levels, the
//! preset's rules, initial state, name, topic and invites, in the spec's order.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    canonical_json::CanonicalJsonObject,
    events::{TimelineEventType, room::power_levels::RoomPowerLevelsEventContent},
};
use serde_json::{Map, Value, json};

use super::{EventDraft, Rooms, append::rules_of, state::EMPTY_STATE};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// A parsed `createRoom` request.
#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub version: RoomVersionId,
    pub preset: Preset,
    /// Extra fields of the create event's content (`m.federate`, `type`, ...).
    pub creation_content: Map<String, Value>,
    pub power_level_override: Option<Map<String, Value>>,
    /// (type, state key, content)
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<ruma::OwnedRoomAliasId>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
}

fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        base.insert(k.clone(), v.clone());
    }
}

/// Tries (each a millisecond later) before giving up on a free room id.
const MAX_CREATE_ATTEMPTS: u64 = 64;

impl Rooms {
    /// Creates a room; returns its id. Every event passes the auth rules like any other.
    pub async fn create_room(
        &self,
        creator: &UserId,
        profile: Map<String, Value>,
        req: CreateRoom,
    ) -> Result<OwnedRoomId> {
        let rules = rules_of(&req.version)?;
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let trusted = req.preset == Preset::TrustedPrivateChat;

        // 1. The create event.
        let mut content = Map::new();
        merge(&mut content, &req.creation_content);
        content.insert("room_version".into(), json!(req.version.as_str()));
        if !rules.authorization.use_room_create_sender {
            content.insert("creator".into(), json!(creator));
        }
        if v12 && trusted && !req.invite.is_empty() {
            // v12 creators hold unlimited power; a trusted chat makes invitees peers.
            let mut extra: Vec<Value> = content
                .get("additional_creators")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            extra.extend(req.invite.iter().map(|u| json!(u)));
            content.insert("additional_creators".into(), Value::Array(extra));
        }
        let room = self
            .create_with_event(creator, &req.version, Value::Object(content))
            .await?;

        // 2. The creator joins.
        let mut member = profile;
        member.insert("membership".into(), json!("join"));
        self.append(
            &room,
            creator,
            EventDraft::state(
                TimelineEventType::RoomMember,
                creator.as_str(),
                Value::Object(member),
            ),
        )
        .await?;

        // 3. Power levels.
        let mut pl = serde_json::to_value(RoomPowerLevelsEventContent::new(&rules.authorization))?;
        let pl_map = pl
            .as_object_mut()
            .expect("power levels serialise to an object");
        let mut events: Map<String, Value> = pl_map
            .get("events")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (kind, level) in [
            ("m.room.name", 50),
            ("m.room.avatar", 50),
            ("m.room.canonical_alias", 50),
            ("m.room.topic", 50),
            ("m.room.power_levels", 100),
            ("m.room.history_visibility", 100),
            ("m.room.encryption", 100),
            ("m.room.server_acl", 100),
            ("m.room.tombstone", if v12 { 150 } else { 100 }),
        ] {
            events.entry(kind.to_owned()).or_insert(json!(level));
        }
        pl_map.insert("events".into(), Value::Object(events));
        let mut users = Map::new();
        if !rules.authorization.explicitly_privilege_room_creators {
            users.insert(creator.to_string(), json!(100));
            if trusted {
                for invitee in &req.invite {
                    users.insert(invitee.to_string(), json!(100));
                }
            }
        }
        pl_map.insert("users".into(), Value::Object(users));
        if let Some(over) = &req.power_level_override {
            merge(pl_map, over);
        }
        self.append(
            &room,
            creator,
            EventDraft::state(TimelineEventType::RoomPowerLevels, "", pl),
        )
        .await?;

        // 4. The canonical alias.
        if let Some(alias) = &req.canonical_alias {
            self.append(
                &room,
                creator,
                EventDraft::state(
                    TimelineEventType::RoomCanonicalAlias,
                    "",
                    json!({ "alias": alias }),
                ),
            )
            .await?;
        }

        // 5. The preset, unless initial_state sets the same event.
        let (join_rule, guest_access) = match req.preset {
            Preset::PublicChat => ("public", "forbidden"),
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
        };
        let overridden = |kind: &str| {
            req.initial_state
                .iter()
                .any(|(k, key, _)| k == kind && key.is_empty())
        };
        for (kind, content) in [
            ("m.room.join_rules", json!({ "join_rule": join_rule })),
            (
                "m.room.history_visibility",
                json!({ "history_visibility": "shared" }),
            ),
            (
                "m.room.guest_access",
                json!({ "guest_access": guest_access }),
            ),
        ] {
            if !overridden(kind) {
                self.append(&room, creator, EventDraft::state(kind, "", content))
                    .await?;
            }
        }

        // 6. Initial state, then name and topic.
        for (kind, key, content) in &req.initial_state {
            self.append(
                &room,
                creator,
                EventDraft::state(kind.as_str(), key.clone(), content.clone()),
            )
            .await?;
        }
        if let Some(name) = &req.name {
            self.append(
                &room,
                creator,
                EventDraft::state(TimelineEventType::RoomName, "", json!({ "name": name })),
            )
            .await?;
        }
        if let Some(topic) = &req.topic {
            let content = json!({ "topic": topic, "m.topic": { "m.text": [{ "body": topic }] } });
            self.append(
                &room,
                creator,
                EventDraft::state(TimelineEventType::RoomTopic, "", content),
            )
            .await?;
        }

        // 7. Invites.
        for invitee in &req.invite {
            self.invite(&room, creator, invitee, None, req.is_direct)
                .await?;
        }
        Ok(room)
    }

    /// Signs and checks a create event and registers the room it founds.
    async fn create_with_event(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        content: Value,
    ) -> Result<OwnedRoomId> {
        let rules = rules_of(version)?;
        let content = ruma::CanonicalJsonValue::try_from(content)
            .map_err(|e| Error::bad_json(format!("creation_content is not canonical JSON: {e}")))?;
        let now: u64 = ruma::MilliSecondsSinceUnixEpoch::now().get().into();
        // In v12 the room id is the create event's hash, so two identical
        // requests within one millisecond would found the same room: on a
        // collision the next millisecond is tried.
        for attempt in 0..MAX_CREATE_ATTEMPTS {
            let mut obj = CanonicalJsonObject::new();
            obj.insert("sender".into(), creator.as_str().into());
            obj.insert(
                "origin_server_ts".into(),
                ruma::CanonicalJsonValue::Integer(ruma::Int::new_saturating(
                    (now + attempt) as i64,
                )),
            );
            obj.insert("type".into(), "m.room.create".into());
            obj.insert("content".into(), content.clone());
            obj.insert("state_key".into(), "".into());
            obj.insert(
                "prev_events".into(),
                ruma::CanonicalJsonValue::Array(Vec::new()),
            );
            obj.insert(
                "auth_events".into(),
                ruma::CanonicalJsonValue::Array(Vec::new()),
            );
            obj.insert(
                "depth".into(),
                ruma::CanonicalJsonValue::Integer(ruma::Int::from(1u8)),
            );
            let v12 = rules.authorization.room_create_event_id_as_room_id;
            let v1_room = (!v12).then(|| RoomId::new_v1(self.server_name()));
            if let Some(room) = &v1_room {
                obj.insert("room_id".into(), room.as_str().into());
            }
            let event_id = self.sign(&rules, &mut obj)?;
            // v12: the room id is the create event's reference hash, as its event id is.
            let room = match v1_room {
                Some(room) => room,
                None => RoomId::new_v2(&event_id.as_str()[1..])
                    .map_err(|e| Error::internal(format!("room id: {e}")))?,
            };
            let empty = self.state.load(EMPTY_STATE)?;
            let pdu = self.check(&room, &rules, event_id, &obj, &empty)?;
            match self.write_new_room(&room, version.clone(), pdu, obj) {
                Ok(()) => return Ok(room),
                Err(e) if e.kind() == ruma::api::error::ErrorKind::RoomInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal("could not find a free room id"))
    }
}
