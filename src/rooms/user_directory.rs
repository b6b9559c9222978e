//! The user directory (`POST /user_directory/search`): whom a user can find.
//!
//! As Synapse does by default, a user finds the members of the rooms they are
//! in and of the rooms published in the room directory, matched on user id
//! and display name; profiles come from the members' room member events.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};

use super::Rooms;
use crate::{
    error::Result,
    storage::{PUBLICROOMID_, USERIDROOMID_MEMBERSHIP, prefix},
};

/// One user the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

impl Rooms {
    /// Up to `limit` users visible to `searcher` whose id or display name
    /// contains every word of `term` (case-insensitive); whether there were more.
    pub fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<DirectoryUser>, bool)> {
        let words: Vec<String> = term.split_whitespace().map(str::to_lowercase).collect();
        if words.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut rooms = std::collections::BTreeSet::new();
        for ((_, room), record) in self
            .db
            .scan_prefix(USERIDROOMID_MEMBERSHIP, &prefix(&(searcher.to_owned(),)))?
        {
            if record.membership == "join" {
                rooms.insert(room);
            }
        }
        for (room, ()) in self.db.scan_prefix(PUBLICROOMID_, b"")? {
            rooms.insert(room);
        }
        let mut found: BTreeMap<OwnedUserId, DirectoryUser> = BTreeMap::new();
        for room in rooms {
            if self.meta(&room)?.is_none() {
                continue;
            }
            let state = self.current_state(&room)?;
            for (&key, &short) in state.iter() {
                let (kind, member) = self.state.key_of(key)?;
                if kind != "m.room.member" {
                    continue;
                }
                let Ok(user) = OwnedUserId::try_from(member) else {
                    continue;
                };
                if found.contains_key(&user) {
                    continue;
                }
                let Some(event) = self.pdu(short)? else {
                    continue;
                };
                if event.content_str("membership").as_deref() != Some("join") {
                    continue;
                }
                let display_name = event.content_str("displayname");
                let haystack = format!(
                    "{} {}",
                    user.as_str().to_lowercase(),
                    display_name.as_deref().unwrap_or_default().to_lowercase()
                );
                if words.iter().all(|w| haystack.contains(w.as_str())) {
                    let avatar_url = event.content_str("avatar_url");
                    found.insert(
                        user.clone(),
                        DirectoryUser {
                            user_id: user,
                            display_name,
                            avatar_url,
                        },
                    );
                }
            }
        }
        let limited = found.len() > limit;
        Ok((found.into_values().take(limit).collect(), limited))
    }
}
