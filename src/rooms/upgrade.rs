//! Room upgrades: a new room of the new version that carries over the old
//! room's important state, a tombstone in the old room pointing to it, and the
//! old room's power levels raised so ordinary members stop talking there.

use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId, events::StateEventType};
use serde_json::{Map, Value, json};

use super::{CreateRoom, EventDraft, Preset, Rooms, append::rules_of};
use crate::error::{Error, Result};

/// State carried over to the new room (besides power levels).
const CARRIED_STATE: &[&str] = &[
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
];

impl Rooms {
    pub async fn upgrade(
        &self,
        room: &RoomId,
        user: &UserId,
        new_version: RoomVersionId,
        profile: Map<String, Value>,
    ) -> Result<OwnedRoomId> {
        let meta = self.require_meta(room)?;
        if !self.is_joined(room, user)? {
            return Err(Error::forbidden("You are not in this room"));
        }
        let levels = self.power_levels(room)?;
        if !levels.user_can_send_state(user, StateEventType::RoomTombstone) {
            return Err(Error::forbidden(
                "You lack the power to upgrade this room (m.room.tombstone)",
            ));
        }
        let new_rules = rules_of(&new_version)?;
        let state = self.state.load(meta.current_state)?;
        let content = |kind: &str| -> Result<Option<Value>> {
            Ok(self
                .state_event(&state, kind, "")?
                .map(|e| e.content_value()))
        };

        let old_create = content("m.room.create")?.unwrap_or_default();
        let mut creation_content = Map::new();
        for field in ["type", "m.federate"] {
            if let Some(v) = old_create.get(field) {
                creation_content.insert(field.into(), v.clone());
            }
        }
        creation_content.insert("predecessor".into(), json!({ "room_id": room }));

        let mut power_levels: Option<Map<String, Value>> =
            content("m.room.power_levels")?.and_then(|v| v.as_object().cloned());
        if let Some(pl) = &mut power_levels {
            let users = pl.entry("users").or_insert_with(|| json!({}));
            if let Some(users) = users.as_object_mut() {
                if new_rules.authorization.explicitly_privilege_room_creators {
                    // v12 creators hold unlimited power and must not be listed.
                    users.remove(user.as_str());
                } else {
                    // The upgrader creates the new room and must be able to set it up,
                    // also when the old room's creators were not listed (v12).
                    let top = users
                        .values()
                        .filter_map(Value::as_i64)
                        .max()
                        .unwrap_or(100)
                        .max(100);
                    users.insert(user.to_string(), json!(top));
                }
            }
        }
        let mut initial_state = Vec::new();
        for kind in CARRIED_STATE {
            if let Some(value) = content(kind)? {
                initial_state.push(((*kind).to_owned(), String::new(), value));
            }
        }
        let request = CreateRoom {
            version: new_version,
            preset: Preset::PrivateChat,
            creation_content,
            power_level_override: power_levels,
            initial_state,
            name: None,
            topic: None,
            canonical_alias: None,
            invite: Vec::new(),
            is_direct: false,
        };
        let new_room = self.create_room(user, profile, request).await?;

        self.append(
            room,
            user,
            EventDraft::state(
                "m.room.tombstone",
                "",
                json!({ "body": "This room has been replaced", "replacement_room": new_room }),
            ),
        )
        .await?;
        self.restrict_after_upgrade(room, user).await?;
        Ok(new_room)
    }

    /// Raises `events_default` and `invite` in the old room above ordinary members.
    async fn restrict_after_upgrade(&self, room: &RoomId, user: &UserId) -> Result<()> {
        let meta = self.require_meta(room)?;
        let state = self.state.load(meta.current_state)?;
        let Some(pl) = self.state_event(&state, "m.room.power_levels", "")? else {
            return Ok(());
        };
        let mut content = pl.content_value();
        let users_default = content
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        for field in ["events_default", "invite"] {
            let current = content.get(field).and_then(Value::as_i64).unwrap_or(0);
            content[field] = json!(current.max(restricted));
        }
        // Best effort: the tombstone is what matters if this is not allowed.
        if let Err(e) = self
            .append(
                room,
                user,
                EventDraft::state("m.room.power_levels", "", content),
            )
            .await
        {
            tracing::info!(%room, error = %e, "could not restrict the upgraded room's power levels");
        }
        Ok(())
    }
}
