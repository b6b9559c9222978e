//! Room aliases (`#name:server` -> room id) and the public room directory.

use http::StatusCode;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId, api::error::ErrorKind,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Rooms, read::Visibility};
use crate::{
    error::{Error, Result},
    storage::{ALIAS_ROOM, JsonValue, PUBLICROOMID_, ROOMIDALIAS_, prefix},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

impl JsonValue for AliasRecord {}

/// One room as the directory lists it.
#[derive(Debug, Clone)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub summary: Value,
    pub joined: u64,
}

impl Rooms {
    fn ensure_local_alias(&self, alias: &RoomAliasId) -> Result<()> {
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param(
                "Aliases of other servers are managed there (federation is not enabled)",
            ));
        }
        Ok(())
    }

    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(self
            .db
            .get(ALIAS_ROOM, &alias.to_string())?
            .map(|r| r.room_id))
    }

    /// Creates an alias; any member of the room may.
    pub fn set_alias(&self, alias: &RoomAliasId, room: &RoomId, user: &UserId) -> Result<()> {
        self.ensure_local_alias(alias)?;
        self.require_meta(room)?;
        if !self.is_joined(room, user)? {
            return Err(Error::forbidden(
                "Only members of a room can give it an alias",
            ));
        }
        let _guard = self.alias_lock.lock();
        if self.db.contains(ALIAS_ROOM, &alias.to_string())? {
            return Err(Error::new(
                StatusCode::CONFLICT,
                ErrorKind::Unknown,
                format!("The alias {alias} is taken"),
            ));
        }
        let mut batch = self.db.batch();
        batch.put(
            ALIAS_ROOM,
            &alias.to_string(),
            &AliasRecord {
                room_id: room.to_owned(),
                creator: user.to_owned(),
            },
        );
        batch.put(ROOMIDALIAS_, &(room.to_owned(), alias.to_string()), &());
        batch.commit()
    }

    /// Removes an alias: its creator, or a member allowed to change the room's
    /// canonical alias, may.
    pub fn remove_alias(&self, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        self.ensure_local_alias(alias)?;
        let _guard = self.alias_lock.lock();
        let record = self
            .db
            .get(ALIAS_ROOM, &alias.to_string())?
            .ok_or_else(|| Error::not_found(format!("The alias {alias} does not exist")))?;
        let is_admin = self.is_joined(&record.room_id, user)?
            && self
                .power_levels(&record.room_id)?
                .user_can_send_state(user, ruma::events::StateEventType::RoomCanonicalAlias);
        if record.creator != user && !is_admin {
            return Err(Error::forbidden(
                "Only the alias's creator or a room admin can remove it",
            ));
        }
        let mut batch = self.db.batch();
        batch.delete(ALIAS_ROOM, &alias.to_string());
        batch.delete(ROOMIDALIAS_, &(record.room_id, alias.to_string()));
        batch.commit()
    }

    /// Local aliases of a room; readable by members (or anyone if world-readable).
    pub fn aliases_for(&self, room: &RoomId, user: &UserId) -> Result<Vec<OwnedRoomAliasId>> {
        let meta = self.require_meta(room)?;
        let state = self.state.load(meta.current_state)?;
        let world_readable = self.visibility_in(&state)? == Visibility::WorldReadable;
        if !world_readable && !self.is_joined(room, user)? {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        let rows = self
            .db
            .scan_prefix(ROOMIDALIAS_, &prefix(&(room.to_owned(),)))?;
        Ok(rows
            .into_iter()
            .filter_map(|((_, alias), ())| OwnedRoomAliasId::try_from(alias).ok())
            .collect())
    }

    pub fn is_published(&self, room: &RoomId) -> Result<bool> {
        self.db.contains(PUBLICROOMID_, &room.to_owned())
    }

    /// Publishes or hides a room in the directory: room admins (who may change
    /// the canonical alias) may.
    pub fn set_published(&self, room: &RoomId, user: &UserId, published: bool) -> Result<()> {
        self.require_meta(room)?;
        let can = self.is_joined(room, user)?
            && self
                .power_levels(room)?
                .user_can_send_state(user, ruma::events::StateEventType::RoomCanonicalAlias);
        if !can {
            return Err(Error::forbidden(
                "Only room admins can change the room's directory visibility",
            ));
        }
        let mut batch = self.db.batch();
        if published {
            batch.put(PUBLICROOMID_, &room.to_owned(), &());
        } else {
            batch.delete(PUBLICROOMID_, &room.to_owned());
        }
        batch.commit()
    }

    /// The published rooms, most joined first, matching `filter` (name, topic,
    /// alias contain it, case-insensitively).
    pub fn public_rooms(&self, filter: Option<&str>) -> Result<Vec<PublicRoom>> {
        let needle = filter.map(str::to_lowercase).filter(|f| !f.is_empty());
        let mut rooms = Vec::new();
        for (room, ()) in self.db.scan_prefix(PUBLICROOMID_, b"")? {
            let summary = self.summary(&room)?;
            if let Some(needle) = &needle {
                let hay = ["name", "topic", "canonical_alias"]
                    .iter()
                    .filter_map(|f| summary.get(*f).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .to_lowercase();
                if !hay.contains(needle.as_str()) {
                    continue;
                }
            }
            let joined = summary["num_joined_members"].as_u64().unwrap_or(0);
            rooms.push(PublicRoom {
                room_id: room,
                summary,
                joined,
            });
        }
        rooms.sort_by(|a, b| {
            b.joined
                .cmp(&a.joined)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        Ok(rooms)
    }

    /// What a directory entry or room summary shows about a room.
    pub fn summary(&self, room: &RoomId) -> Result<Value> {
        let meta = self.require_meta(room)?;
        let state = self.state.load(meta.current_state)?;
        let content = |kind: &str| -> Result<Value> {
            Ok(self
                .state_event(&state, kind, "")?
                .map(|e| e.content_value())
                .unwrap_or(Value::Null))
        };
        let mut joined = 0u64;
        for (&key, &short) in state.iter() {
            if self.state.key_of(key)?.0 == "m.room.member"
                && self
                    .pdu(short)?
                    .and_then(|e| e.content_str("membership"))
                    .as_deref()
                    == Some("join")
            {
                joined += 1;
            }
        }
        let create = content("m.room.create")?;
        let join_rule = content("m.room.join_rules")?["join_rule"]
            .as_str()
            .unwrap_or("invite")
            .to_owned();
        let mut summary = json!({
            "room_id": room,
            "num_joined_members": joined,
            "world_readable": self.visibility_in(&state)? == Visibility::WorldReadable,
            "guest_can_join": content("m.room.guest_access")?["guest_access"] == "can_join",
            "join_rule": join_rule,
            "room_version": meta.version.as_str(),
        });
        let fields = [
            ("name", content("m.room.name")?["name"].clone()),
            ("topic", content("m.room.topic")?["topic"].clone()),
            (
                "canonical_alias",
                content("m.room.canonical_alias")?["alias"].clone(),
            ),
            ("avatar_url", content("m.room.avatar")?["url"].clone()),
            ("room_type", create["type"].clone()),
            (
                "encryption",
                content("m.room.encryption")?["algorithm"].clone(),
            ),
        ];
        for (field, value) in fields {
            if value.is_string() {
                summary[field] = value;
            }
        }
        Ok(summary)
    }
}
