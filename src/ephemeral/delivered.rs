//! Delivered status: when a device acknowledges a sync position (its next
//! `since` over HTTP, an `ack` frame on the WebSocket), its user has received
//! everything up to it, so in each joined room with news since the user's
//! previous acknowledgement, the newest event of each other sender gets the
//! user's `ai.iambig.delivered` receipt, which that sender alone is sent. In
//! a group this costs one receipt per sender, not one per member to every
//! member.
//!
//! Acknowledging happens on every sync, so the work is bounded: one seek per
//! joined room finds there is nothing new, and a room with news is read
//! backwards only until an event from someone else (at most
//! `MAX_EVENTS_READ_PER_ROOM` events).

use std::collections::HashMap;

use ruma::{OwnedUserId, UserId};

use super::receipts::Receipts;
use crate::{
    error::Result,
    rooms::Rooms,
    storage::{Key, SHORTROOMIDCOUNT_SHORTEVENTID, prefix},
};

/// Events read back per room for the newest event of each other sender.
const MAX_EVENTS_READ_PER_ROOM: usize = 50;

#[derive(Debug)]
pub struct Delivered {
    enabled: bool,
    /// The highest position each user has acknowledged since start. Unknown
    /// after a restart: then the bounded read and the receipts' own
    /// never-backwards check keep the first acknowledgement cheap and right.
    acknowledged: parking_lot::Mutex<HashMap<OwnedUserId, u64>>,
}

impl Delivered {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            acknowledged: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A device of `user` has received everything up to `upto`.
    pub fn acknowledged(
        &self,
        rooms: &Rooms,
        receipts: &Receipts,
        user: &UserId,
        upto: u64,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let after = {
            let mut acknowledged = self.acknowledged.lock();
            let previous = acknowledged.get(user).copied();
            if previous.is_some_and(|p| p >= upto) {
                // Another device already covered it.
                return Ok(());
            }
            acknowledged.insert(user.to_owned(), upto);
            previous.unwrap_or(0)
        };
        for room in rooms.joined_rooms(user)? {
            let Some(meta) = rooms.meta(&room)? else {
                continue;
            };
            let rows = rooms.db().iter(
                SHORTROOMIDCOUNT_SHORTEVENTID,
                &prefix(&(meta.short,)),
                &(meta.short, upto.saturating_add(1)).encode(),
                false,
            );
            let mut senders = std::collections::HashSet::new();
            for row in rows.take(MAX_EVENTS_READ_PER_ROOM) {
                let ((_, count), short) = row?;
                if count <= after {
                    break;
                }
                let Some(pdu) = rooms.pdu(short)? else {
                    continue;
                };
                if pdu.sender() == user || !senders.insert(pdu.sender().to_owned()) {
                    continue;
                }
                receipts.set_delivered(
                    meta.short,
                    user,
                    pdu.sender(),
                    pdu.event_id.as_str(),
                    count,
                )?;
            }
        }
        Ok(())
    }
}
