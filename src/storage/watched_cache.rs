//! Values read from storage, kept in memory until a write to what they were
//! read from. Each entry holds a watch registered before its read, so once a
//! committed change has woken the watch the entry is read again: it can lag
//! a write only between the write's commit and its wake-up.

use std::{borrow::Borrow, hash::Hash, num::NonZeroUsize};

use lru::LruCache;
use parking_lot::Mutex;

use super::Watch;
use crate::error::Result;

#[derive(Debug)]
pub struct WatchedCache<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, (V, Watch)>>,
}

impl<K: Hash + Eq, V: Clone> WatchedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The value for `key`: the kept one while its watch has not fired,
    /// else `read`'s, kept with the watch `watch` registers before it.
    pub fn get_or_read<Q>(
        &self,
        key: &Q,
        watch: impl FnOnce() -> Watch,
        read: impl FnOnce() -> Result<V>,
    ) -> Result<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some((value, watch)) = self.entries.lock().get(key)
            && !watch.has_changed().unwrap_or(true)
        {
            return Ok(value.clone());
        }
        let watch = watch();
        let value = read()?;
        self.entries
            .lock()
            .put(key.to_owned(), (value.clone(), watch));
        Ok(value)
    }
}
