//! Messenger conveniences over plain Matrix: one direct chat per pair of
//! users (dialogs), and when a contact was last seen.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    Services,
    config::MessengerConfig,
    error::{Error, Result},
    rooms::{CreateRoom, Preset},
};

const M_DIRECT: &str = "m.direct";

type PairLock = Arc<tokio::sync::Mutex<()>>;

#[derive(Debug)]
pub struct Messenger {
    config: MessengerConfig,
    /// One lock per pair of users (in sorted order) while a dialog is looked
    /// up or created, so that concurrent calls create one room, not several.
    dialogs: parking_lot::Mutex<HashMap<(OwnedUserId, OwnedUserId), PairLock>>,
}

/// The dialog a call found or made.
#[derive(Debug)]
pub struct Dialog {
    pub room_id: OwnedRoomId,
    pub created: bool,
}

impl Messenger {
    pub fn new(config: MessengerConfig) -> Self {
        Self {
            config,
            dialogs: Default::default(),
        }
    }

    fn pair_lock(&self, a: &UserId, b: &UserId) -> ((OwnedUserId, OwnedUserId), PairLock) {
        let pair = if a <= b {
            (a.to_owned(), b.to_owned())
        } else {
            (b.to_owned(), a.to_owned())
        };
        let lock = self.dialogs.lock().entry(pair.clone()).or_default().clone();
        (pair, lock)
    }

    /// The direct chat of `me` with `other`: the existing one, or a new one
    /// (`trusted_private_chat`, `is_direct` invite). Either way it is listed
    /// in `me`'s `m.direct`.
    pub async fn dialog(
        &self,
        s: &Services,
        me: &UserId,
        other: &UserId,
        version: RoomVersionId,
    ) -> Result<Dialog> {
        if me == other {
            return Err(Error::invalid_param("A dialog needs another user than you"));
        }
        if !s.users.is_local(other) || !s.users.is_active(other)? {
            return Err(Error::not_found(format!("{other} does not exist")));
        }
        let (pair, lock) = self.pair_lock(me, other);
        let result = {
            let _held = lock.lock().await;
            self.find_or_create(s, me, other, version).await
        };
        // Forget the lock unless someone else is waiting on it.
        let mut dialogs = self.dialogs.lock();
        if Arc::strong_count(&lock) <= 2 {
            dialogs.remove(&pair);
        }
        result
    }

    async fn find_or_create(
        &self,
        s: &Services,
        me: &UserId,
        other: &UserId,
        version: RoomVersionId,
    ) -> Result<Dialog> {
        let mut direct = direct_rooms(s, me)?;
        let listed: Vec<OwnedRoomId> = direct
            .get(other.as_str())
            .and_then(Value::as_array)
            .map(|rooms| {
                rooms
                    .iter()
                    .filter_map(|r| r.as_str().and_then(|r| OwnedRoomId::try_from(r).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let mut found = None;
        // The newest listed room first, then any room the two share alone
        // that was made as a direct chat.
        for room in listed.iter().rev() {
            if is_dialog_of(s, room, me, other, false)? {
                found = Some(room.clone());
                break;
            }
        }
        if found.is_none() {
            for (room, record) in s.rooms.memberships(me)?.into_iter().rev() {
                if matches!(record.membership.as_str(), "join" | "invite")
                    && is_dialog_of(s, &room, me, other, true)?
                {
                    found = Some(room);
                    break;
                }
            }
        }
        let (room, created) = match found {
            Some(room) => {
                if s.rooms.membership(&room, me)?.as_deref() == Some("invite") {
                    s.rooms.join(&room, me, None, profile(s, me)?).await?;
                }
                (room, false)
            }
            None => {
                let request = CreateRoom {
                    version,
                    preset: Preset::TrustedPrivateChat,
                    creation_content: Map::new(),
                    power_level_override: None,
                    initial_state: Vec::new(),
                    name: None,
                    topic: None,
                    canonical_alias: None,
                    invite: vec![other.to_owned()],
                    is_direct: true,
                };
                let room = s.rooms.create_room(me, profile(s, me)?, request).await?;
                (room, true)
            }
        };
        if !listed.contains(&room) {
            let mut rooms: Vec<Value> = listed.iter().map(|r| json!(r)).collect();
            rooms.push(json!(room));
            direct.insert(other.to_string(), Value::Array(rooms));
            s.users.set_account_data(
                me,
                None,
                M_DIRECT,
                serde_json::value::to_raw_value(&direct)?,
            )?;
        }
        Ok(Dialog {
            room_id: room,
            created,
        })
    }

    /// `last_seen/{userId}`: the user's presence with `last_active_ts`, if
    /// the configured privacy lets `viewer` see it.
    pub fn last_seen(&self, s: &Services, viewer: &UserId, user: &UserId) -> Result<Value> {
        if !s.presence.enabled() {
            return Err(Error::forbidden("Presence is disabled on this server"));
        }
        if !s.users.is_local(user) || s.users.account(user)?.is_none() {
            return Err(Error::not_found(format!("{user} does not exist")));
        }
        if viewer != user {
            match self.config.last_seen.as_str() {
                "everyone" => {}
                "shared_room" => {
                    let mine = s.rooms.joined_rooms(viewer)?;
                    if !s.rooms.joined_rooms(user)?.iter().any(|r| mine.contains(r)) {
                        return Err(Error::forbidden("You do not share a room with this user"));
                    }
                }
                _ => return Err(Error::forbidden("Last seen is not shared on this server")),
            }
        }
        let mut content = s
            .presence
            .last_seen(user)?
            .unwrap_or_else(|| json!({ "presence": "offline" }));
        content["user_id"] = json!(user);
        Ok(content)
    }
}

/// The user's `m.direct` content (user id -> room ids).
fn direct_rooms(s: &Services, user: &UserId) -> Result<Map<String, Value>> {
    Ok(match s.users.account_data(user, None, M_DIRECT)? {
        Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
        None => Map::new(),
    })
}

/// The two are in the room (joined or invited) with nobody else; unless
/// `listed`, one of their member events must also say `is_direct`.
fn is_dialog_of(
    s: &Services,
    room: &RoomId,
    me: &UserId,
    other: &UserId,
    need_direct_flag: bool,
) -> Result<bool> {
    let present = |user: &UserId| -> Result<bool> {
        Ok(matches!(
            s.rooms.membership(room, user)?.as_deref(),
            Some("join" | "invite")
        ))
    };
    if !s.rooms.exists(room)? || !present(me)? || !present(other)? {
        return Ok(false);
    }
    let summary = s.rooms.sync_summary(room, me)?;
    let members = summary["m.joined_member_count"].as_u64().unwrap_or(0)
        + summary["m.invited_member_count"].as_u64().unwrap_or(0);
    if members != 2 {
        return Ok(false);
    }
    if !need_direct_flag {
        return Ok(true);
    }
    for user in [me, other] {
        let content = s
            .rooms
            .current_state_content(room, "m.room.member", user.as_str())?;
        if content.is_some_and(|c| c["is_direct"].as_bool() == Some(true)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// displayname and avatar_url for a member event.
fn profile(s: &Services, user: &UserId) -> Result<Map<String, Value>> {
    let mut profile = Map::new();
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = s.users.profile_field(user, field)? {
            profile.insert(field.into(), value);
        }
    }
    Ok(profile)
}
