//! The storage engine: RocksDB with one column family per index, typed tables,
//! atomic batches across tables, the two-phase counter and prefix watchers.

mod activity;
pub mod codec;
mod columns;
mod counter;
mod watch;
mod watched_cache;

use std::{marker::PhantomData, path::Path, sync::Arc};

use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options,
    ReadOptions, WriteBatch,
};

use self::watch::Watchers;
pub use self::{
    codec::{JsonValue, Key, Raw, Value, prefix},
    columns::*,
    counter::Counter,
    watch::Watch,
    watched_cache::WatchedCache,
};
use crate::error::{Error, Result};

type Db = DBWithThreadMode<MultiThreaded>;

/// The schema this build writes. Bump it with a migration when a stored layout changes.
pub const SCHEMA_VERSION: u64 = 1;

const SCHEMA_KEY: &str = "schema_version";
const COUNTER_CEILING_KEY: &str = "counter_ceiling";

/// A typed column family: keys of type `K`, values of type `V`.
pub struct Table<K, V> {
    pub name: &'static str,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    counter: Counter,
    watchers: Watchers,
    activity: activity::Activity,
    /// Committed writes whose counts are not visible yet, and how far
    /// watchers have been woken.
    unpublished: parking_lot::Mutex<Unpublished>,
}

#[derive(Default)]
struct Unpublished {
    /// Committed writes with their highest count: their watchers are woken
    /// once readers can see them.
    writes: Vec<(u64, Written)>,
    /// Every write with a count up to this one has woken its watchers.
    published: u64,
}

type Written = Vec<(&'static str, Vec<u8>)>;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the database at `path`, refusing one written by a newer bigd.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::internal(format!(
                "cannot create database folder {}: {e}",
                path.display()
            ))
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(512);
        opts.increase_parallelism(2);
        opts.set_keep_log_file_num(4);

        // Column families this build does not know (written by a newer version)
        // must still be opened, or RocksDB refuses; the schema check decides.
        let existing = Db::list_cf(&opts, path).unwrap_or_default();
        let mut names: Vec<String> = ALL_COLUMNS.iter().map(|s| s.to_string()).collect();
        for name in existing {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let descriptors = names.into_iter().map(|name| {
            let mut cf_opts = Options::default();
            cf_opts.set_level_compaction_dynamic_level_bytes(true);
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = Db::open_cf_descriptors(&opts, path, descriptors).map_err(|e| {
            Error::internal(format!(
                "cannot open the database at {}: {e}",
                path.display()
            ))
        })?;

        let global = |key: &str| -> Result<Option<u64>> {
            let cf = db.cf_handle(GLOBAL.name).expect("global column exists");
            match db.get_pinned_cf(&cf, key.as_bytes())? {
                Some(v) => Ok(Some(u64::from_bytes(&v)?)),
                None => Ok(None),
            }
        };
        match global(SCHEMA_KEY)? {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::internal(format!(
                    "the database at {} has schema version {v}, newer than this bigd supports \
                     ({SCHEMA_VERSION}); run a newer bigd or restore a backup",
                    path.display()
                )));
            }
            Some(_) => {}
            None => {
                let cf = db.cf_handle(GLOBAL.name).expect("global column exists");
                db.put_cf(&cf, SCHEMA_KEY, SCHEMA_VERSION.to_bytes())?;
            }
        }
        let ceiling = global(COUNTER_CEILING_KEY)?.unwrap_or(1);
        let counter = Counter::new(ceiling);
        let unpublished = Unpublished {
            writes: Vec::new(),
            published: counter.visible(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                counter,
                watchers: Watchers::default(),
                activity: Default::default(),
                unpublished: parking_lot::Mutex::new(unpublished),
            }),
        })
    }

    fn cf(&self, name: &str) -> Arc<rocksdb::BoundColumnFamily<'_>> {
        self.inner
            .db
            .cf_handle(name)
            .expect("every table is declared in columns.rs")
    }

    pub fn get<K: Key, V: Value>(&self, table: Table<K, V>, key: &K) -> Result<Option<V>> {
        match self
            .inner
            .db
            .get_pinned_cf(&self.cf(table.name), key.encode())?
        {
            Some(bytes) => Ok(Some(V::from_bytes(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn contains<K: Key, V: Value>(&self, table: Table<K, V>, key: &K) -> Result<bool> {
        Ok(self
            .inner
            .db
            .get_pinned_cf(&self.cf(table.name), key.encode())?
            .is_some())
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix<K: Key, V: Value>(
        &self,
        table: Table<K, V>,
        prefix: &[u8],
    ) -> Result<Vec<(K, V)>> {
        self.scan_from(table, prefix, prefix, usize::MAX)
    }

    /// Up to `limit` entries with keys starting with `prefix`, from `start` on.
    pub fn scan_from<K: Key, V: Value>(
        &self,
        table: Table<K, V>,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let cf = self.cf(table.name);
        let iter = self.inner.db.iterator_cf_opt(
            &cf,
            bounded_to(prefix),
            IteratorMode::From(start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((K::decode(&k)?, V::from_bytes(&v)?));
        }
        Ok(out)
    }

    /// Up to `limit` entries with keys starting with `prefix` and below `before`,
    /// in descending key order.
    pub fn scan_rev<K: Key, V: Value>(
        &self,
        table: Table<K, V>,
        prefix: &[u8],
        before: &[u8],
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let cf = self.cf(table.name);
        let mut iter = self.inner.db.raw_iterator_cf_opt(&cf, bounded_to(prefix));
        iter.seek_for_prev(before);
        let mut out = Vec::new();
        while iter.valid() && out.len() < limit {
            let (Some(k), Some(v)) = (iter.key(), iter.value()) else {
                break;
            };
            if !k.starts_with(prefix) {
                break;
            }
            if k < before {
                out.push((K::decode(k)?, V::from_bytes(v)?));
            }
            iter.prev();
        }
        iter.status()?;
        Ok(out)
    }

    /// Lazily iterates entries whose keys start with `prefix`: forwards from
    /// `start` (inclusive), or backwards from below `start`. Stops reading as
    /// soon as the caller stops pulling.
    pub fn iter<K: Key, V: Value>(
        &self,
        table: Table<K, V>,
        prefix: &[u8],
        start: &[u8],
        forward: bool,
    ) -> TableIter<'_, K, V> {
        let cf = self.cf(table.name);
        let mut raw = self.inner.db.raw_iterator_cf_opt(&cf, bounded_to(prefix));
        if forward {
            raw.seek(start);
        } else {
            raw.seek_for_prev(start);
            // seek_for_prev lands on `start` itself when it exists; we want below it.
            if raw.valid() && raw.key() == Some(start) {
                raw.prev();
            }
        }
        TableIter {
            raw,
            prefix: prefix.to_vec(),
            forward,
            done: false,
            _types: PhantomData,
        }
    }

    pub fn batch(&self) -> Batch {
        Batch {
            engine: self.clone(),
            inner: WriteBatch::default(),
            written: Vec::new(),
            counts: Vec::new(),
            after_commit: Vec::new(),
        }
    }

    /// Reserves the next global count for a change in a batch about to be written.
    fn reserve_count(&self) -> Result<u64> {
        self.inner.counter.reserve(|ceiling| {
            self.inner.db.put_cf(
                &self.cf(GLOBAL.name),
                COUNTER_CEILING_KEY,
                ceiling.to_bytes(),
            )?;
            Ok(())
        })
    }

    /// The highest count handed out so far (committed or not).
    pub fn reserved_count(&self) -> u64 {
        self.inner.counter.reserved()
    }

    /// The highest count below which every change is committed and readable.
    pub fn visible_count(&self) -> u64 {
        self.inner.counter.visible()
    }

    /// The highest count up to which every write is visible *and* has woken
    /// its watchers. A reader that registered watches before reading this
    /// count is woken by every write above it; one that reads it after
    /// checking older watches knows each write up to it has flagged them.
    pub fn published_count(&self) -> u64 {
        self.inner.unpublished.lock().published
    }

    /// Registers a watch on `prefix` in `table`; register before reading.
    pub fn watch<K, V>(&self, table: Table<K, V>, prefix: Vec<u8>) -> Watch {
        self.inner.watchers.watch(table.name, prefix, None)
    }

    /// [`Self::watch`], also ringing `bell` on every wake: a waiter with
    /// many watches sleeps on its bell (see `watch.rs`).
    pub fn watch_ringing<K, V>(
        &self,
        table: Table<K, V>,
        prefix: Vec<u8>,
        bell: &std::sync::Arc<tokio::sync::Notify>,
    ) -> Watch {
        self.inner.watchers.watch(table.name, prefix, Some(bell))
    }

    /// Waits until no commit has woken a waiter for a moment (at most a
    /// little longer under steady traffic): background writers commit
    /// between deliveries, not in the middle of one (`activity.rs`).
    pub async fn wait_quiet(&self) {
        let (quiet, at_most) = (activity::QUIET, activity::QUIET_AT_MOST);
        self.inner.activity.wait_quiet(quiet, at_most).await;
    }

    /// Flushes memtables: used on shutdown so a restart does not replay the WAL.
    pub fn flush(&self) -> Result<()> {
        for name in ALL_COLUMNS {
            self.inner.db.flush_cf(&self.cf(name))?;
        }
        Ok(())
    }
}

/// Read options that keep an iterator inside `prefix`. Without bounds, a
/// seek that finds nothing live in the prefix goes on skipping whatever
/// deleted entries follow it (tombstones stay until compaction), which made
/// reads of emptied queues cost the size of everything deleted after them.
fn bounded_to(prefix: &[u8]) -> ReadOptions {
    let mut opts = ReadOptions::default();
    if prefix.is_empty() {
        return opts;
    }
    opts.set_iterate_lower_bound(prefix.to_vec());
    if let Some(end) = prefix_successor(prefix) {
        opts.set_iterate_upper_bound(end);
    }
    opts
}

/// The smallest key above every key that starts with `prefix`, if any.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A lazy, typed iterator over one table (see `Engine::iter`).
pub struct TableIter<'a, K, V> {
    raw: rocksdb::DBRawIteratorWithThreadMode<'a, Db>,
    prefix: Vec<u8>,
    forward: bool,
    done: bool,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: Value> Iterator for TableIter<'_, K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match (self.raw.key(), self.raw.value()) {
            (Some(k), Some(v)) if k.starts_with(&self.prefix) => {
                K::decode(k).and_then(|k| Ok((k, V::from_bytes(v)?)))
            }
            _ => {
                self.done = true;
                return self.raw.status().err().map(|e| Err(e.into()));
            }
        };
        if self.forward {
            self.raw.next();
        } else {
            self.raw.prev();
        }
        Some(item)
    }
}

/// An atomic write across tables. Nothing is visible until `commit`; a batch
/// dropped without commit writes nothing.
pub struct Batch {
    engine: Engine,
    inner: WriteBatch,
    written: Vec<(&'static str, Vec<u8>)>,
    counts: Vec<u64>,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl Batch {
    pub fn put<K: Key, V: Value>(&mut self, table: Table<K, V>, key: &K, value: &V) {
        let key = key.encode();
        self.inner
            .put_cf(&self.engine.cf(table.name), &key, value.to_bytes());
        self.written.push((table.name, key));
    }

    pub fn delete<K: Key, V: Value>(&mut self, table: Table<K, V>, key: &K) {
        let key = key.encode();
        self.inner.delete_cf(&self.engine.cf(table.name), &key);
        self.written.push((table.name, key));
    }

    /// Deletes every entry whose key starts with `prefix`.
    pub fn delete_prefix<K: Key, V: Value>(
        &mut self,
        table: Table<K, V>,
        prefix: &[u8],
    ) -> Result<()> {
        let cf = self.engine.cf(table.name);
        let iter = self
            .engine
            .inner
            .db
            .iterator_cf(&cf, IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            self.inner.delete_cf(&cf, &k);
            self.written.push((table.name, k.to_vec()));
        }
        Ok(())
    }

    /// A new global count that becomes visible to readers when this batch commits.
    pub fn next_count(&mut self) -> Result<u64> {
        let count = self.engine.reserve_count()?;
        self.counts.push(count);
        Ok(count)
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// Runs `hook` once this batch has committed (not if it fails): how a
    /// writer hands work to a task that must not see it before it is durable.
    pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(hook));
    }

    pub fn commit(mut self) -> Result<()> {
        let inner = std::mem::take(&mut self.inner);
        let result = self.engine.inner.db.write(inner);
        let written = if result.is_ok() {
            std::mem::take(&mut self.written)
        } else {
            Vec::new()
        };
        self.publish(written);
        result?;
        for hook in std::mem::take(&mut self.after_commit) {
            hook();
        }
        Ok(())
    }

    /// Releases this batch's counts and wakes the watchers of every committed
    /// write that has become visible: a waiter is only woken when a read would
    /// actually return the change, even when batches commit out of count order.
    fn publish(&mut self, written: Written) {
        let engine = &self.engine.inner;
        let mut unpublished = engine.unpublished.lock();
        let highest = self.counts.iter().max().copied();
        for count in self.counts.drain(..) {
            engine.counter.release(count);
        }
        if !written.is_empty() {
            unpublished.writes.push((highest.unwrap_or(0), written));
        }
        let visible = engine.counter.visible();
        let ready: Vec<_> = unpublished
            .writes
            .extract_if(.., |(count, _)| *count <= visible)
            .collect();
        // Woken under the lock, so that `published` never runs ahead of a
        // wake-up (live subscriptions rely on it, see `published_count`).
        let mut woke = false;
        for (_, written) in ready {
            woke |= engine
                .watchers
                .wake(written.iter().map(|(cf, k)| (*cf, k.as_slice())));
        }
        if woke {
            engine.activity.woke();
        }
        unpublished.published = unpublished.published.max(visible);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.counts.is_empty() {
            // An abandoned batch may have been holding others back.
            self.publish(Vec::new());
        }
    }
}

#[cfg(test)]
mod tests;
