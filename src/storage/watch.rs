//! Prefix watchers: how waiters (sync long-polls, WebSockets) learn of new data.
//!
//! A waiter registers a watch on (column, key prefix) *before* it reads, then
//! sleeps on it. Every committed batch wakes the watches whose prefix begins one
//! of the keys it wrote, after its counts became visible. Because the receiver
//! exists before the read, a write that lands between the read and the sleep is
//! still seen: no lost wake-up.
//!
//! Prefixes end at a key-part boundary (see `codec::prefix`), are whole keys,
//! or are empty (the whole table).
//!
//! A waiter with many watches (a sync of a user in many rooms) registers them
//! with one *bell*: a wake rings it too, so the waiter sleeps on the bell
//! rather than on every watch, and checks which watches fired when it rings.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::codec::SEP;

/// Registered prefixes per column.
type Registry = HashMap<&'static str, HashMap<Vec<u8>, Prefix>>;

/// One watched prefix: the channel its watches follow, and the bells to
/// ring (by address, so that renewing a watch does not add its bell twice).
#[derive(Debug)]
struct Prefix {
    sender: watch::Sender<u64>,
    bells: HashMap<usize, Weak<Notify>>,
}

impl Prefix {
    fn new() -> Self {
        Self {
            sender: watch::channel(0).0,
            bells: HashMap::new(),
        }
    }

    fn add_bell(&mut self, bell: &Arc<Notify>) {
        // Bells of waiters that are gone are dropped now and then, so a
        // prefix that is never written does not collect them.
        let len = self.bells.len();
        if len >= 8 && len.is_power_of_two() {
            self.bells.retain(|_, b| b.strong_count() > 0);
        }
        self.bells
            .insert(Arc::as_ptr(bell) as usize, Arc::downgrade(bell));
    }

    fn ring(&mut self) {
        self.sender.send_modify(|n| *n += 1);
        self.bells.retain(|_, bell| match bell.upgrade() {
            Some(bell) => {
                // A ring while nobody waits is kept for the next wait.
                bell.notify_one();
                true
            }
            None => false,
        });
    }
}

#[derive(Debug, Default)]
pub struct Watchers {
    by_column: Mutex<Registry>,
}

/// A registered watch. `changed().await` returns once a matching write committed
/// after registration.
pub type Watch = watch::Receiver<u64>;

impl Watchers {
    pub fn watch(
        &self,
        column: &'static str,
        prefix: Vec<u8>,
        bell: Option<&Arc<Notify>>,
    ) -> Watch {
        let mut columns = self.by_column.lock();
        let prefixes = columns.entry(column).or_default();
        if prefixes.len() > 1024 && prefixes.len().is_power_of_two() {
            prefixes.retain(|_, p| p.sender.receiver_count() > 0);
        }
        let entry = prefixes.entry(prefix).or_insert_with(Prefix::new);
        if let Some(bell) = bell {
            entry.add_bell(bell);
        }
        let mut rx = entry.sender.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// Wakes every watch on a prefix of one of `keys`; true if there was one.
    pub fn wake<'a>(&self, written: impl IntoIterator<Item = (&'static str, &'a [u8])>) -> bool {
        let mut woke = false;
        let mut columns = self.by_column.lock();
        for (column, key) in written {
            let Some(prefixes) = columns.get_mut(column) else {
                continue;
            };
            if prefixes.is_empty() {
                continue;
            }
            // The empty prefix watches a whole table.
            let boundaries = std::iter::once(0)
                .chain(
                    key.iter()
                        .enumerate()
                        .filter(|&(_, &b)| b == SEP)
                        .map(|(i, _)| i + 1),
                )
                .chain(std::iter::once(key.len()));
            for end in boundaries {
                let candidate = &key[..end];
                let orphaned = match prefixes.get_mut(candidate) {
                    Some(watched) => {
                        watched.ring();
                        let orphaned = watched.sender.receiver_count() == 0;
                        woke |= !orphaned;
                        orphaned
                    }
                    None => false,
                };
                if orphaned {
                    prefixes.remove(candidate);
                }
            }
        }
        woke
    }

    #[cfg(test)]
    pub fn registered(&self, column: &'static str) -> usize {
        self.by_column.lock().get(column).map_or(0, |p| p.len())
    }
}
