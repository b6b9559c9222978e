//! Account data, global and per room, stored exactly as the client sent it, with a
//! change feed by count so sync can send what changed since a token.

use ruma::{OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Users;
use crate::{
    error::Result,
    storage::{
        Batch, JsonValue, Key, Raw, USERIDCOUNT_ACCOUNTDATAKEY, USERIDROOMIDTYPE_ACCOUNTDATA,
        prefix,
    },
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountDataEntry {
    /// The global count of the last change, also the key in the change feed.
    pub count: u64,
    pub content: Box<RawValue>,
}

impl JsonValue for AccountDataEntry {}

fn key(user: &UserId, room: Option<&RoomId>, kind: &str) -> (OwnedUserId, String, String) {
    (
        user.to_owned(),
        room.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        kind.to_owned(),
    )
}

impl Users {
    pub fn account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Box<RawValue>>> {
        Ok(self
            .db
            .get(USERIDROOMIDTYPE_ACCOUNTDATA, &key(user, room, kind))?
            .map(|e| e.content))
    }

    /// Sets account data in its own batch.
    pub fn set_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: Box<RawValue>,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        self.put_account_data(&mut batch, user, room, kind, content)?;
        batch.commit()
    }

    /// Adds an account data write to `batch`, moving its entry in the change feed.
    pub fn put_account_data(
        &self,
        batch: &mut Batch,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: Box<RawValue>,
    ) -> Result<()> {
        let key = key(user, room, kind);
        if let Some(old) = self.db.get(USERIDROOMIDTYPE_ACCOUNTDATA, &key)? {
            batch.delete(USERIDCOUNT_ACCOUNTDATAKEY, &(user.to_owned(), old.count));
        }
        let count = batch.next_count()?;
        let feed_value = serde_json::to_vec(&(&key.1, &key.2))?;
        batch.put(
            USERIDCOUNT_ACCOUNTDATAKEY,
            &(user.to_owned(), count),
            &Raw(feed_value),
        );
        batch.put(
            USERIDROOMIDTYPE_ACCOUNTDATA,
            &key,
            &AccountDataEntry { count, content },
        );
        Ok(())
    }

    /// Deletes all of a user's account data (account deactivation).
    pub fn delete_all_account_data(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        let p = prefix(&(user.to_owned(),));
        batch.delete_prefix(USERIDROOMIDTYPE_ACCOUNTDATA, &p)?;
        batch.delete_prefix(USERIDCOUNT_ACCOUNTDATAKEY, &p)
    }
}

/// One account data entry as sync delivers it.
#[derive(Debug)]
pub struct AccountDataChange {
    /// `None` for global account data.
    pub room: Option<ruma::OwnedRoomId>,
    pub kind: String,
    pub content: Box<RawValue>,
}

impl Users {
    /// Account data whose latest change has a count in (after, upto]; with
    /// `after == 0`, all of it. Each (room, type) appears once, with its
    /// current content.
    pub fn account_data_between(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<AccountDataChange>> {
        let user_prefix = prefix(&(user.to_owned(),));
        let start = (user.to_owned(), after.saturating_add(1)).encode();
        let mut changes = Vec::new();
        for row in self
            .db
            .iter(USERIDCOUNT_ACCOUNTDATAKEY, &user_prefix, &start, true)
        {
            let ((_, count), Raw(key)) = row?;
            if count > upto {
                break;
            }
            let (room, kind): (String, String) = serde_json::from_slice(&key)?;
            let room = if room.is_empty() {
                None
            } else {
                ruma::OwnedRoomId::try_from(room).ok()
            };
            if let Some(content) = self.account_data(user, room.as_deref(), &kind)? {
                changes.push(AccountDataChange {
                    room,
                    kind,
                    content,
                });
            }
        }
        Ok(changes)
    }
}
