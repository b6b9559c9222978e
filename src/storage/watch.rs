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

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::codec::SEP;

/// Registered prefixes per column, each with the channel its waiters sleep on.
type Registry = HashMap<&'static str, HashMap<Vec<u8>, watch::Sender<u64>>>;

#[derive(Debug, Default)]
pub struct Watchers {
    by_column: Mutex<Registry>,
}

/// A registered watch. `changed().await` returns once a matching write committed
/// after registration.
pub type Watch = watch::Receiver<u64>;

impl Watchers {
    pub fn watch(&self, column: &'static str, prefix: Vec<u8>) -> Watch {
        let mut columns = self.by_column.lock();
        let prefixes = columns.entry(column).or_default();
        if prefixes.len() > 1024 && prefixes.len().is_power_of_two() {
            prefixes.retain(|_, s| s.receiver_count() > 0);
        }
        let sender = prefixes
            .entry(prefix)
            .or_insert_with(|| watch::channel(0).0);
        let mut rx = sender.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// Wakes every watch on a prefix of one of `keys`.
    pub fn wake<'a>(&self, written: impl IntoIterator<Item = (&'static str, &'a [u8])>) {
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
                let orphaned = match prefixes.get(candidate) {
                    Some(sender) => {
                        sender.send_modify(|n| *n += 1);
                        sender.receiver_count() == 0
                    }
                    None => false,
                };
                if orphaned {
                    prefixes.remove(candidate);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn registered(&self, column: &'static str) -> usize {
        self.by_column.lock().get(column).map_or(0, |p| p.len())
    }
}
