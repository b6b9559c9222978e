//! The global two-phase counter.
//!
//! Every change a reader can page through (timeline, account data, ...) takes a
//! count. A count is *reserved* before its batch is written and *released* after
//! the batch is committed; readers only see counts below the lowest one still in
//! flight. So a reader that saw count N has seen every count below N, even when
//! batches commit out of order, and a sync token never skips an event.
//!
//! The counter is persisted in blocks: the stored ceiling is raised by `BLOCK`
//! before any count above it is handed out, so a restart resumes above every
//! count ever used without a write per count.

use std::collections::BTreeSet;

use parking_lot::Mutex;

use crate::error::Result;

pub(crate) const BLOCK: u64 = 1_000;

#[derive(Debug)]
pub struct Counter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next: u64,
    ceiling: u64,
    in_flight: BTreeSet<u64>,
}

impl Counter {
    /// `ceiling` is the persisted ceiling: every count handed out so far is below it.
    pub fn new(ceiling: u64) -> Self {
        Self {
            state: Mutex::new(State {
                next: ceiling.max(1),
                ceiling,
                in_flight: BTreeSet::new(),
            }),
        }
    }

    /// Reserves the next count. `persist_ceiling` is called (under the lock, so
    /// ceilings are written in order) when a new block must be recorded first.
    pub fn reserve(&self, persist_ceiling: impl FnOnce(u64) -> Result<()>) -> Result<u64> {
        let mut state = self.state.lock();
        let count = state.next;
        if count >= state.ceiling {
            let new_ceiling = count + BLOCK;
            persist_ceiling(new_ceiling)?;
            state.ceiling = new_ceiling;
        }
        state.next = count + 1;
        state.in_flight.insert(count);
        Ok(count)
    }

    /// Marks a count as committed (or abandoned): it no longer holds readers back.
    pub fn release(&self, count: u64) {
        self.state.lock().in_flight.remove(&count);
    }

    /// The highest count reserved so far.
    pub fn reserved(&self) -> u64 {
        self.state.lock().next - 1
    }

    /// The highest count below which everything is committed.
    pub fn visible(&self) -> u64 {
        let state = self.state.lock();
        match state.in_flight.first() {
            Some(&lowest) => lowest - 1,
            None => state.next - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn in_flight_counts_hold_back_visibility() {
        let c = Counter::new(10);
        let a = c.reserve(|_| Ok(())).unwrap();
        let b = c.reserve(|_| Ok(())).unwrap();
        assert_eq!((a, b), (10, 11));
        assert_eq!(c.visible(), 9);
        c.release(b); // committed out of order: still hidden behind `a`
        assert_eq!(c.visible(), 9);
        c.release(a);
        assert_eq!(c.visible(), 11);
    }

    #[test]
    fn ceiling_is_persisted_before_crossing_it() {
        let c = Counter::new(0);
        let mut persisted = Vec::new();
        for _ in 0..(BLOCK + 5) {
            let n = c.reserve(|ceil| {
                persisted.push(ceil);
                Ok(())
            });
            let n = n.unwrap();
            assert!(n < *persisted.last().unwrap());
            c.release(n);
        }
        assert_eq!(persisted, vec![1 + BLOCK, 1 + 2 * BLOCK]);
    }

    #[test]
    fn concurrent_writers_never_expose_an_uncommitted_count() {
        let c = Arc::new(Counter::new(1));
        let committed = Arc::new(Mutex::new(BTreeSet::new()));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (c, committed) = (c.clone(), committed.clone());
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        let n = c.reserve(|_| Ok(())).unwrap();
                        committed.lock().insert(n);
                        c.release(n);
                    }
                })
            })
            .collect();
        let reader = {
            let (c, committed) = (c.clone(), committed.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    let visible = c.visible();
                    let seen = committed.lock();
                    // Every count up to `visible` must already be committed.
                    let expected = visible; // counts start at 1
                    let have = seen.range(1..=visible).count() as u64;
                    assert_eq!(have, expected, "visible={visible}");
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(c.visible(), 4_000);
    }
}
