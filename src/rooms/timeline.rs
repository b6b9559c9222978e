//! Recent timelines in memory: for the rooms read most recently, the newest
//! (count, event) entries of the timeline index, so paging does not step
//! backwards through RocksDB. Bounded twice: at most `ROOMS` rooms, each with at
//! most `ENTRIES` entries; reads beyond a cached window go to RocksDB.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use parking_lot::Mutex;

use crate::{
    error::Result,
    storage::{Engine, Key, SHORTROOMIDCOUNT_SHORTEVENTID, prefix},
};

const ROOMS: usize = 256;
const ENTRIES: usize = 50_000;
/// Entries kept by a window only syncs read.
const SYNC_CAP: usize = 1024;

#[derive(Debug)]
pub struct RoomTimeline {
    /// (count, short event id), ascending.
    entries: Vec<(u64, u64)>,
    /// Whether `entries` reaches back to the room's first event.
    complete: bool,
    /// How many entries appends keep: small for a window only syncs read,
    /// raised to `ENTRIES` once the room is paged.
    cap: usize,
}

impl RoomTimeline {
    /// Up to `max` entries before (`forward == false`) or from `start`, if
    /// the window answers the request; `None` means: ask RocksDB.
    pub fn page(&self, start: u64, forward: bool, max: usize) -> Option<Vec<(u64, u64)>> {
        let oldest = self.entries.first().map_or(u64::MAX, |e| e.0);
        if forward {
            // Entries from `start` on; all of them are here if start is inside the window.
            if start < oldest && !self.complete {
                return None;
            }
            let from = self.entries.partition_point(|e| e.0 < start);
            Some(self.entries[from..].iter().take(max).copied().collect())
        } else {
            let until = self.entries.partition_point(|e| e.0 < start);
            let available = &self.entries[..until];
            if available.len() < max && !self.complete {
                return None;
            }
            Some(available.iter().rev().take(max).copied().collect())
        }
    }

    /// Every entry with a count in (after, upto], newest first, if the window
    /// holds them all: it reaches back to `after`, and forward to `upto` or
    /// to `newest`, a bound on the room's newest count. `None`: ask RocksDB.
    pub fn between(&self, after: u64, upto: u64, newest: u64) -> Option<Vec<(u64, u64)>> {
        let (first, last) = (self.entries.first()?.0, self.entries.last()?.0);
        // An entry at or below `after` shows nothing in range is older than
        // the window; `last` must cover what can exist up to `upto`.
        if !(self.complete || first <= after) || last < upto.min(newest) {
            return None;
        }
        let from = self.entries.partition_point(|e| e.0 <= after);
        let until = self.entries.partition_point(|e| e.0 <= upto);
        Some(
            self.entries[from..until.max(from)]
                .iter()
                .rev()
                .copied()
                .collect(),
        )
    }
}

pub struct Timelines {
    db: Engine,
    rooms: Mutex<LruCache<u64, Arc<Mutex<RoomTimeline>>>>,
}

impl Timelines {
    pub fn new(db: Engine) -> Self {
        Self {
            db,
            rooms: Mutex::new(LruCache::new(NonZeroUsize::new(ROOMS).expect("non-zero"))),
        }
    }

    /// The room's cached window, loaded on first use.
    pub fn get(&self, short_room: u64) -> Result<Arc<Mutex<RoomTimeline>>> {
        let window = self.get_loading(short_room, ENTRIES)?;
        {
            let mut timeline = window.lock();
            if timeline.complete || timeline.cap >= ENTRIES {
                timeline.cap = ENTRIES;
                return Ok(window.clone());
            }
        }
        // A small window a sync loaded: paging wants the long one. Readers
        // still holding the old window find it falling behind and go to
        // RocksDB (`between` checks the newest count).
        self.rooms.lock().pop(&short_room);
        self.get_loading(short_room, ENTRIES)
    }

    /// The room's cached window; loaded, if not cached, with at most `load`
    /// entries. Appends grow it to `SYNC_CAP` entries (or `load`, if more).
    pub fn get_loading(&self, short_room: u64, load: usize) -> Result<Arc<Mutex<RoomTimeline>>> {
        if let Some(found) = self.rooms.lock().get(&short_room) {
            return Ok(found.clone());
        }
        let load = load.clamp(1, ENTRIES);
        let room_prefix = prefix(&(short_room,));
        let mut entries = Vec::new();
        for row in self.db.iter(
            SHORTROOMIDCOUNT_SHORTEVENTID,
            &room_prefix,
            &(short_room, u64::MAX).encode(),
            false,
        ) {
            let ((_, count), short) = row?;
            entries.push((count, short));
            if entries.len() > load {
                break;
            }
        }
        let complete = entries.len() <= load;
        entries.truncate(load);
        entries.reverse();
        let loaded = Arc::new(Mutex::new(RoomTimeline {
            entries,
            complete,
            cap: load.max(SYNC_CAP),
        }));
        // Another reader may have loaded it meanwhile; keep the first, which
        // appends may already have extended.
        let window = self
            .rooms
            .lock()
            .get_or_insert(short_room, || loaded)
            .clone();
        // Events committed while this window was loading were not appended to
        // it (it was not cached yet): catch up, holding the window so appends
        // wait and stay in count order.
        {
            let mut timeline = window.lock();
            let next = timeline.entries.last().map_or(0, |e| e.0 + 1);
            for row in self.db.iter(
                SHORTROOMIDCOUNT_SHORTEVENTID,
                &room_prefix,
                &(short_room, next).encode(),
                true,
            ) {
                let ((_, count), short) = row?;
                timeline.entries.push((count, short));
            }
        }
        Ok(window)
    }

    /// Records a committed event (called under the room's lock, in count order).
    pub fn appended(&self, short_room: u64, count: u64, short: u64) {
        let Some(timeline) = self.rooms.lock().peek(&short_room).cloned() else {
            return;
        };
        let mut timeline = timeline.lock();
        if timeline.entries.last().is_none_or(|last| last.0 < count) {
            timeline.entries.push((count, short));
            if timeline.entries.len() > timeline.cap {
                let excess = timeline.entries.len() - timeline.cap;
                timeline.entries.drain(..excess);
                timeline.complete = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RoomTimeline;

    #[test]
    fn windows_answer_only_what_they_hold() {
        let t = RoomTimeline {
            entries: (10..20).map(|c| (c, c + 100)).collect(),
            complete: false,
            cap: 100,
        };
        assert_eq!(
            t.page(15, false, 3),
            Some(vec![(14, 114), (13, 113), (12, 112)])
        );
        assert_eq!(
            t.page(13, false, 5),
            None,
            "needs events older than the window"
        );
        assert_eq!(
            t.page(17, true, 10),
            Some(vec![(17, 117), (18, 118), (19, 119)])
        );
        assert_eq!(t.page(5, true, 3), None);
        let full = RoomTimeline {
            complete: true,
            ..t
        };
        assert_eq!(full.page(12, false, 5), Some(vec![(11, 111), (10, 110)]));
        assert_eq!(full.page(5, true, 2), Some(vec![(10, 110), (11, 111)]));
    }

    #[test]
    fn a_window_answers_a_range_only_when_nothing_in_it_can_be_missing() {
        let t = RoomTimeline {
            entries: (10..20).map(|c| (c, c + 100)).collect(),
            complete: false,
            cap: 100,
        };
        assert_eq!(t.between(16, 18, 19), Some(vec![(18, 118), (17, 117)]));
        assert_eq!(
            t.between(10, 25, 19),
            Some((11..20).rev().map(|c| (c, c + 100)).collect())
        );
        assert_eq!(
            t.between(17, 30, 17),
            Some(vec![(19, 119), (18, 118)]),
            "bound below last"
        );
        assert_eq!(t.between(9, 12, 19), None, "older than the window");
        assert_eq!(
            t.between(15, 25, 21),
            None,
            "an event at 20 or 21 may not be here yet"
        );
        assert_eq!(t.between(19, 19, 19), Some(vec![]));
        let full = RoomTimeline {
            complete: true,
            ..t
        };
        assert_eq!(full.between(0, 11, 19), Some(vec![(11, 111), (10, 110)]));
        let empty = RoomTimeline {
            entries: Vec::new(),
            complete: true,
            cap: 100,
        };
        assert_eq!(empty.between(0, 5, 5), None);
    }
}
