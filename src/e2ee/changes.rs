//! `device_lists` in sync and `GET /keys/changes`: whose device list a user
//! should fetch again, and whose they can stop tracking.

use std::collections::BTreeSet;

use ruma::{OwnedRoomId, OwnedUserId, UserId};

use super::key_changes_between;
use crate::{Services, error::Result};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceListChanges {
    pub changed: BTreeSet<OwnedUserId>,
    pub left: BTreeSet<OwnedUserId>,
}

impl DeviceListChanges {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

/// What changed for `user` in (after, upto]:
/// - `changed`: users sharing a room with them whose devices or cross-signing
///   keys changed (themselves included), who joined one of their rooms, or the
///   members of a room they joined;
/// - `left`: users who no longer share any room with them, having left (or the
///   user having left the last room they shared).
pub fn device_list_changes(
    s: &Services,
    user: &UserId,
    after: u64,
    upto: u64,
) -> Result<DeviceListChanges> {
    let mut out = DeviceListChanges::default();
    if after >= upto {
        return Ok(out);
    }
    let joined: BTreeSet<OwnedRoomId> = s.rooms.joined_rooms(user)?.into_iter().collect();
    let shares_a_room = |other: &UserId| -> Result<bool> {
        if other == user {
            return Ok(true);
        }
        Ok(s.rooms
            .joined_rooms(other)?
            .iter()
            .any(|room| joined.contains(room)))
    };

    for other in key_changes_between(&s.db, after, upto)? {
        if shares_a_room(&other)? {
            out.changed.insert(other);
        }
    }

    let mut maybe_left = BTreeSet::new();
    for (room, record) in s.rooms.memberships(user)? {
        let began = record.began();
        let mine_changed = record.count > after && record.count <= upto;
        if joined.contains(&room) && began > after && began <= upto {
            // Newly joined: every member's devices are news.
            let state = s.rooms.state_at_count(&room, upto)?;
            for (pdu, _) in s.rooms.state_events_of(&state)? {
                if pdu.kind().to_string() == "m.room.member"
                    && pdu.content_str("membership").as_deref() == Some("join")
                    && let Some(member) = pdu.state_key().and_then(|k| UserId::parse(k).ok())
                {
                    out.changed.insert(member);
                }
            }
            continue;
        }
        if !joined.contains(&room) {
            if mine_changed && record.membership != "invite" && record.membership != "knock" {
                // Left (or was removed): its members may be gone from view.
                let state = s
                    .rooms
                    .state_at_count(&room, record.count.saturating_sub(1))?;
                for (pdu, _) in s.rooms.state_events_of(&state)? {
                    if pdu.kind().to_string() == "m.room.member"
                        && pdu.content_str("membership").as_deref() == Some("join")
                        && let Some(member) = pdu.state_key().and_then(|k| UserId::parse(k).ok())
                    {
                        maybe_left.insert(member);
                    }
                }
            }
            continue;
        }
        if s.rooms.newest_count_at_most(&room)? <= after {
            continue;
        }
        // Members who joined or left this room since the token.
        let before = s.rooms.state_at_count(&room, after)?;
        let now = s.rooms.state_at_count(&room, upto)?;
        if std::sync::Arc::ptr_eq(&before, &now) {
            // The same (cached) snapshot: no state changed, nobody came or went.
            continue;
        }
        for (pdu, _) in s.rooms.state_delta(&before, &now)? {
            if pdu.kind().to_string() != "m.room.member" {
                continue;
            }
            let Some(member) = pdu.state_key().and_then(|k| UserId::parse(k).ok()) else {
                continue;
            };
            match pdu.content_str("membership").as_deref() {
                Some("join") => {
                    let was_joined = s
                        .rooms
                        .member_events_of(&before, [member.to_string()])?
                        .first()
                        .and_then(|(pdu, _)| pdu.content_str("membership"))
                        .as_deref()
                        == Some("join");
                    if !was_joined {
                        out.changed.insert(member);
                    }
                }
                Some("leave" | "ban") => {
                    maybe_left.insert(member);
                }
                _ => {}
            }
        }
    }
    for other in maybe_left {
        if other != user && !out.changed.contains(&other) && !shares_a_room(&other)? {
            out.left.insert(other);
        }
    }
    Ok(out)
}
