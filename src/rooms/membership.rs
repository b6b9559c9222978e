//! Membership changes: invite, join, leave, kick, ban, unban, knock, forget.
//! The auth rules decide what is allowed; these add the checks and content the
//! spec asks of the server (profiles on join, `is_direct`, restricted joins).

use http::StatusCode;
use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, UserId,
    api::error::ErrorKind,
    events::{
        TimelineEventType,
        room::{join_rules::JoinRule, power_levels::RoomPowerLevels},
    },
};
use serde_json::{Map, Value, json};

use super::{EventDraft, Rooms, append::rules_of};
use crate::{
    error::{Error, Result},
    storage::{USERIDROOMID_MEMBERSHIP, prefix},
};

fn member_content(membership: &str, reason: Option<&str>) -> Map<String, Value> {
    let mut content = Map::new();
    content.insert("membership".into(), json!(membership));
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        content.insert("reason".into(), json!(reason));
    }
    content
}

impl Rooms {
    /// The user's membership in the room per its current state.
    pub fn membership(&self, room: &RoomId, user: &UserId) -> Result<Option<String>> {
        let Some(meta) = self.meta(room)? else {
            return Ok(None);
        };
        let state = self.state.load(meta.current_state)?;
        Ok(self
            .state_event(&state, "m.room.member", user.as_str())?
            .and_then(|e| e.content_str("membership")))
    }

    pub fn is_joined(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self.membership(room, user)?.as_deref() == Some("join"))
    }

    /// [`Self::joined_rooms`] from memory while the user's memberships have
    /// not changed. It lags a change between its commit and its wake-up:
    /// for callers that watch memberships themselves (syncs) or can take a
    /// change as if it came a moment later (delivered receipts).
    pub fn joined_rooms_cached(&self, user: &UserId) -> Result<std::sync::Arc<Vec<OwnedRoomId>>> {
        self.joined.get_or_read(
            user,
            || {
                self.db
                    .watch(USERIDROOMID_MEMBERSHIP, prefix(&(user.to_owned(),)))
            },
            || Ok(std::sync::Arc::new(self.joined_rooms(user)?)),
        )
    }

    /// Rooms the user is joined to.
    pub fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        let rows = self
            .db
            .scan_prefix(USERIDROOMID_MEMBERSHIP, &prefix(&(user.to_owned(),)))?;
        Ok(rows
            .into_iter()
            .filter(|(_, r)| r.membership == "join")
            .map(|((_, room), _)| room)
            .collect())
    }

    async fn set_membership(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        self.append(
            room,
            sender,
            EventDraft::state(
                TimelineEventType::RoomMember,
                target.as_str(),
                Value::Object(content),
            ),
        )
        .await
    }

    pub async fn invite(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        self.require_meta(room)?;
        if self.membership(room, target)?.as_deref() == Some("join") {
            return Err(Error::forbidden(format!("{target} is already in the room")));
        }
        let mut content = member_content("invite", reason);
        if is_direct {
            content.insert("is_direct".into(), json!(true));
        }
        self.set_membership(room, sender, target, content).await
    }

    /// Joins a room this server knows. `profile` holds `displayname`/`avatar_url`.
    pub async fn join(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
        profile: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        let meta = self.require_meta(room)?;
        let mut content = member_content("join", reason);
        content.extend(profile);
        let current = self.membership(room, user)?;
        if current.as_deref() != Some("invite")
            && current.as_deref() != Some("join")
            && let Some(via) = self.restricted_join_authoriser(room, &meta, user)?
        {
            content.insert("join_authorised_via_users_server".into(), json!(via));
        }
        self.set_membership(room, user, user, content).await
    }

    /// For a restricted room the user may join through membership of an allowed
    /// room: a local member who can invite vouches for the join.
    fn restricted_join_authoriser(
        &self,
        room: &RoomId,
        meta: &super::RoomMeta,
        user: &UserId,
    ) -> Result<Option<String>> {
        let state = self.state.load(meta.current_state)?;
        let Some(rules_event) = self.state_event(&state, "m.room.join_rules", "")? else {
            return Ok(None);
        };
        let Ok(join_rules) = serde_json::from_str::<
            ruma::events::room::join_rules::RoomJoinRulesEventContent,
        >(rules_event.content().get()) else {
            return Ok(None);
        };
        let allow = match &join_rules.join_rule {
            JoinRule::Restricted(r) | JoinRule::KnockRestricted(r) => &r.allow,
            _ => return Ok(None),
        };
        let qualifies = allow.iter().any(|rule| match rule {
            ruma::events::room::join_rules::AllowRule::RoomMembership(m) => {
                self.is_joined(&m.room_id, user).unwrap_or(false)
            }
            _ => false,
        });
        if !qualifies {
            return Ok(None);
        }
        let levels = self.power_levels(room)?;
        for (key, &short) in state.iter() {
            let (kind, member) = self.state.key_of(*key)?;
            if kind != "m.room.member" {
                continue;
            }
            let Ok(member) = UserId::parse(member) else {
                continue;
            };
            if member.server_name() != self.server_name() {
                continue;
            }
            let joined = self
                .pdu(short)?
                .and_then(|e| e.content_str("membership"))
                .as_deref()
                == Some("join");
            if joined && levels.user_can_invite(&member) {
                return Ok(Some(member.to_string()));
            }
        }
        Ok(None)
    }

    /// The room's power levels (defaults when there is no event).
    pub fn power_levels(&self, room: &RoomId) -> Result<RoomPowerLevels> {
        let meta = self.require_meta(room)?;
        let rules = rules_of(&meta.version)?;
        let state = self.state.load(meta.current_state)?;
        let create = self
            .state_event(&state, "m.room.create", "")?
            .ok_or_else(|| Error::internal("room without create event"))?;
        let creators = ruma::state_res::events::RoomCreateEvent::new(create)
            .creators(&rules.authorization)
            .map_err(Error::internal)?;
        let source = match self.state_event(&state, "m.room.power_levels", "")? {
            Some(pl) => serde_json::from_str::<
                ruma::events::room::power_levels::RoomPowerLevelsEventContent,
            >(pl.content().get())
            .map(Into::into)
            .unwrap_or(ruma::events::room::power_levels::RoomPowerLevelsSource::None),
            None => ruma::events::room::power_levels::RoomPowerLevelsSource::None,
        };
        Ok(RoomPowerLevels::new(source, &rules.authorization, creators))
    }

    pub async fn leave(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.require_meta(room)?;
        self.set_membership(room, user, user, member_content("leave", reason))
            .await
    }

    pub async fn kick(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.require_meta(room)?;
        match self.membership(room, target)?.as_deref() {
            Some("join" | "invite" | "knock") => {}
            _ => return Err(Error::forbidden(format!("{target} is not in the room"))),
        }
        self.set_membership(room, sender, target, member_content("leave", reason))
            .await
    }

    pub async fn ban(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.require_meta(room)?;
        self.set_membership(room, sender, target, member_content("ban", reason))
            .await
    }

    pub async fn unban(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.require_meta(room)?;
        if self.membership(room, target)?.as_deref() != Some("ban") {
            return Err(Error::forbidden(format!("{target} is not banned")));
        }
        self.set_membership(room, sender, target, member_content("leave", reason))
            .await
    }

    pub async fn knock(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
        profile: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        self.require_meta(room)?;
        let mut content = member_content("knock", reason);
        content.extend(profile);
        self.set_membership(room, user, user, content).await
    }

    /// Forgets a room the user has left: it no longer appears for them.
    pub fn forget(&self, room: &RoomId, user: &UserId) -> Result<()> {
        let key = (user.to_owned(), room.to_owned());
        let Some(mut record) = self.db.get(USERIDROOMID_MEMBERSHIP, &key)? else {
            return Err(Error::not_found("You have never been in that room"));
        };
        if record.membership == "join"
            || record.membership == "invite"
            || record.membership == "knock"
        {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Leave the room before forgetting it",
            ));
        }
        record.forgotten = true;
        let mut batch = self.db.batch();
        batch.put(USERIDROOMID_MEMBERSHIP, &key, &record);
        batch.commit()
    }
}

impl Rooms {
    /// A local user may redact an event of this room that they sent, or any
    /// event of it with the room's redact power level.
    pub(super) fn authorize_redaction(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<()> {
        let original = self
            .pdu_by_id(target)?
            .filter(|e| e.room_id == room)
            .ok_or_else(|| Error::not_found("Event not found in this room"))?;
        let own = original.sender() == sender;
        if !own
            && !self
                .power_levels(room)?
                .user_can_redact_event_of_other(sender)
        {
            return Err(Error::forbidden("You may only redact your own events here"));
        }
        Ok(())
    }

    /// Redacts an event: its sender may, and so may anyone with the room's
    /// redact power level.
    pub async fn redact(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &ruma::EventId,
        reason: Option<&str>,
        txn: (String, String),
    ) -> Result<OwnedEventId> {
        let meta = self.require_meta(room)?;
        let rules = rules_of(&meta.version)?;
        self.authorize_redaction(room, sender, target)?;
        let mut content = Map::new();
        if rules.redaction.content_field_redacts {
            content.insert("redacts".into(), json!(target));
        }
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        let mut draft = EventDraft::new(TimelineEventType::RoomRedaction, Value::Object(content));
        draft.redacts = Some(target.to_owned());
        draft.txn = Some(txn);
        self.append(room, sender, draft).await
    }
}

impl Rooms {
    /// Carries a changed display name or avatar into the user's member event
    /// in every room they are joined to, as clients show names from there.
    /// Rooms where nothing changes get no event; a room that refuses the
    /// event is logged and skipped.
    pub async fn propagate_profile(
        &self,
        user: &UserId,
        displayname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<usize> {
        let mut updated = 0;
        for room in self.joined_rooms(user)? {
            let state = self.current_state(&room)?;
            let Some(current) = self.state_event(&state, "m.room.member", user.as_str())? else {
                continue;
            };
            let Value::Object(mut content) = current.content_value() else {
                continue;
            };
            let before = content.clone();
            for (field, value) in [("displayname", displayname), ("avatar_url", avatar_url)] {
                match value {
                    Some(v) => content.insert(field.to_owned(), Value::String(v.to_owned())),
                    None => content.remove(field),
                };
            }
            if content == before {
                continue;
            }
            match self.set_membership(&room, user, user, content).await {
                Ok(_) => updated += 1,
                Err(e) => {
                    tracing::warn!(%room, %user, error = %e, "cannot update the member event")
                }
            }
        }
        Ok(updated)
    }
}
