//! Space hierarchies (`GET /rooms/{roomId}/hierarchy`): a breadth-first walk
//! over `m.space.child` state events from a space, listing each room the user
//! may see with its summary and its own child events.

use std::collections::{HashSet, VecDeque};

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use crate::error::{Error, Result};

/// Rooms a walk visits at most, however large the space.
const MAX_ROOMS: usize = 1000;

impl Rooms {
    /// The rooms of the space `root` that `user` may see, in breadth-first
    /// order, each a summary with `children_state`. `max_depth` 0 lists the
    /// root alone; `suggested_only` follows only children marked suggested.
    pub fn hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        max_depth: Option<u64>,
        suggested_only: bool,
    ) -> Result<Vec<Value>> {
        if !self.exists(root)? {
            return Err(Error::not_found("Unknown room"));
        }
        let mut queue = VecDeque::from([(root.to_owned(), 0u64)]);
        let mut seen: HashSet<OwnedRoomId> = HashSet::from([root.to_owned()]);
        let mut rooms = Vec::new();
        while let Some((room, depth)) = queue.pop_front() {
            // Rooms of other servers need federation; unknown ones are skipped.
            if !self.exists(&room)? {
                continue;
            }
            let mut summary = self.summary(&room)?;
            if !self.may_see_in_hierarchy(user, &room, &summary)? {
                if room == root {
                    return Err(Error::forbidden("You cannot see this space"));
                }
                continue;
            }
            let children = self.space_children(&room)?;
            let descend = max_depth.is_none_or(|max| depth < max);
            if descend {
                for child in &children {
                    let suggested = child["content"]["suggested"] == true;
                    let Some(id) = child["state_key"]
                        .as_str()
                        .and_then(|k| OwnedRoomId::try_from(k).ok())
                    else {
                        continue;
                    };
                    if (!suggested_only || suggested)
                        && seen.len() < MAX_ROOMS
                        && seen.insert(id.clone())
                    {
                        queue.push_back((id, depth + 1));
                    }
                }
            }
            summary["children_state"] = Value::Array(children);
            rooms.push(summary);
        }
        Ok(rooms)
    }

    /// Joined, invited or knocking; or a room anyone may peek at or join.
    fn may_see_in_hierarchy(&self, user: &UserId, room: &RoomId, summary: &Value) -> Result<bool> {
        let peekable = summary["world_readable"] == true
            || matches!(
                summary["join_rule"].as_str(),
                Some("public" | "knock" | "knock_restricted" | "restricted")
            );
        if peekable {
            return Ok(true);
        }
        Ok(matches!(
            self.membership(room, user)?.as_deref(),
            Some("join" | "invite" | "knock")
        ))
    }

    /// The room's `m.space.child` events with a non-empty `via`, stripped.
    fn space_children(&self, room: &RoomId) -> Result<Vec<Value>> {
        let state = self.current_state(room)?;
        let mut children = Vec::new();
        for (&key, &short) in state.iter() {
            let (kind, state_key) = self.state.key_of(key)?;
            if kind != "m.space.child" {
                continue;
            }
            let Some(event) = self.pdu(short)? else {
                continue;
            };
            let content = event.content_value();
            let has_via = content["via"].as_array().is_some_and(|v| !v.is_empty());
            if has_via {
                children.push(json!({
                    "type": "m.space.child",
                    "state_key": state_key,
                    "content": content,
                    "sender": event.sender(),
                    "origin_server_ts": event.origin_server_ts(),
                }));
            }
        }
        Ok(children)
    }
}
