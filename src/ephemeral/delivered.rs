//! Delivered status: when a device acknowledges a sync position (its next
//! `since` over HTTP, an `ack` frame on the WebSocket), its user has received
//! everything up to it, so in each joined room with news since the user's
//! previous acknowledgement, the newest event of each other sender gets the
//! user's `ai.iambig.delivered` receipt, which that sender alone is sent. In
//! a group this costs one receipt per sender, not one per member to every
//! member.
//!
//! Acknowledging happens on every sync, so the work is bounded: the joined
//! rooms come from memory, an in-memory bound on each room's newest event
//! finds there is nothing new without a read, and a room with news is read
//! backwards at most `MAX_EVENTS_READ_PER_ROOM` events (from the room's
//! timeline window in memory when it holds them). The receipts found
//! are handed to a writer task that commits whatever has queued up in one
//! batch: with many devices acknowledging, one commit per acknowledgement
//! was most of the server's work. A receipt thus lands a moment after the
//! acknowledgement (at once when the server is idle).

use std::collections::HashMap;

use ruma::{OwnedUserId, UserId};

use tokio::sync::mpsc;

use super::receipts::DeliveredItem;
use crate::{error::Result, rooms::Rooms};

/// Events read back per room for the newest event of each other sender.
const MAX_EVENTS_READ_PER_ROOM: usize = 50;

/// Receipts the writer takes into one batch at most.
const MAX_BATCH: usize = 1024;

/// How long the writer gathers receipts after the first: in a busy room each
/// member acknowledges every message, and a receipt replaced within the
/// window is written once. Nobody sees a tick 25 ms late.
const GATHER: std::time::Duration = std::time::Duration::from_millis(25);

#[derive(Debug)]
pub struct Delivered {
    enabled: bool,
    queue: mpsc::UnboundedSender<DeliveredItem>,
    /// The writer's end, until `start_writer` takes it.
    pending: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<DeliveredItem>>>,
    /// The highest position each user has acknowledged since start. Unknown
    /// after a restart: then the bounded read and the receipts' own
    /// never-backwards check keep the first acknowledgement cheap and right.
    acknowledged: parking_lot::Mutex<HashMap<OwnedUserId, u64>>,
}

impl Delivered {
    pub fn new(enabled: bool) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        Self {
            enabled,
            queue,
            pending: parking_lot::Mutex::new(Some(pending)),
            acknowledged: Default::default(),
        }
    }

    /// Starts the task that writes queued receipts, batching what queued up
    /// while the previous batch was written. It ends with the server.
    pub fn start_writer(&self, services: std::sync::Weak<crate::Services>) {
        let Some(mut pending) = self.pending.lock().take() else {
            return;
        };
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                tokio::time::sleep(GATHER).await;
                let Some(db) = services.upgrade().map(|s| s.db.clone()) else {
                    return;
                };
                db.wait_quiet().await;
                let mut items = vec![first];
                while items.len() < MAX_BATCH {
                    match pending.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let Some(s) = services.upgrade() else { return };
                if *s.stopping.borrow() {
                    return;
                }
                if let Err(e) = s.receipts.set_delivered_many(&items) {
                    tracing::warn!(error = %e, "cannot record delivered receipts");
                }
            }
        });
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A device of `user` has received everything up to `upto`.
    pub fn acknowledged(&self, rooms: &Rooms, user: &UserId, upto: u64) -> Result<()> {
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
        for room in rooms.joined_rooms_cached(user)?.iter() {
            if rooms.newest_count_at_most(room)? <= after {
                continue;
            }
            let Some(meta) = rooms.meta(room)? else {
                continue;
            };
            let newest =
                rooms.timeline_between(room, after, upto, MAX_EVENTS_READ_PER_ROOM, |_, _| {
                    Ok(true)
                })?;
            let mut senders = std::collections::HashSet::new();
            for (pdu, event_meta) in newest.events.iter().rev() {
                if pdu.sender() == user || !senders.insert(pdu.sender().to_owned()) {
                    continue;
                }
                // The writer is gone only when the server stops.
                let _ = self.queue.send(DeliveredItem {
                    short_room: meta.short,
                    user: user.to_owned(),
                    sender: pdu.sender().to_owned(),
                    event_id: pdu.event_id.to_string(),
                    event_count: event_meta.count,
                });
            }
        }
        Ok(())
    }
}
