//! Room state: short ids for (type, state key) pairs, and state snapshots stored
//! as diffs against a parent snapshot. Chains are cut every `MAX_CHAIN` diffs by
//! writing a full snapshot, so loading one reads a bounded number of records;
//! loaded snapshots are kept in an LRU cache.

use std::{collections::HashMap, num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    storage::{
        Batch, Engine, JsonValue, Raw, SHORTSTATEHASH_STATEDIFF, SHORTSTATEKEY_STATEKEY,
        STATEKEY_SHORTSTATEKEY,
    },
};

/// Full state: short state key -> short event id.
pub type StateMap = HashMap<u64, u64>;

/// The empty state (before a room's create event).
pub const EMPTY_STATE: u64 = 0;
const MAX_CHAIN: u32 = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateDiff {
    /// `None`: this record is a full snapshot.
    pub parent: Option<u64>,
    /// Diffs between this snapshot and the nearest full one.
    pub chain: u32,
    /// Entries set (added or replaced) relative to the parent.
    pub set: Vec<(u64, u64)>,
    /// Keys removed relative to the parent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<u64>,
}

impl JsonValue for StateDiff {}

pub struct StateStore {
    db: Engine,
    snapshots: Mutex<LruCache<u64, Arc<StateMap>>>,
    /// Chain lengths of recent snapshots, so a batch can stage a snapshot on
    /// top of another one it staged itself (not committed yet).
    chains: Mutex<LruCache<u64, u32>>,
    keys: Mutex<HashMap<(String, String), u64>>,
    keys_by_short: Mutex<HashMap<u64, (String, String)>>,
    /// Creating a short state key must not race with another creation of the same key.
    create_key: Mutex<()>,
}

impl StateStore {
    pub fn new(db: Engine, cache: usize) -> Self {
        Self {
            db,
            snapshots: Mutex::new(LruCache::new(NonZeroUsize::new(cache).expect("non-zero"))),
            chains: Mutex::new(LruCache::new(NonZeroUsize::new(cache).expect("non-zero"))),
            keys: Mutex::new(HashMap::new()),
            keys_by_short: Mutex::new(HashMap::new()),
            create_key: Mutex::new(()),
        }
    }

    /// The short id of (type, state key), if it was ever used.
    pub fn short_key(&self, kind: &str, state_key: &str) -> Result<Option<u64>> {
        let key = (kind.to_owned(), state_key.to_owned());
        if let Some(&short) = self.keys.lock().get(&key) {
            return Ok(Some(short));
        }
        let short = self.db.get(STATEKEY_SHORTSTATEKEY, &key)?;
        if let Some(short) = short {
            self.remember_key(key, short);
        }
        Ok(short)
    }

    /// The short id of (type, state key), created (and committed) if new.
    pub fn short_key_or_create(&self, kind: &str, state_key: &str) -> Result<u64> {
        if let Some(short) = self.short_key(kind, state_key)? {
            return Ok(short);
        }
        let _guard = self.create_key.lock();
        if let Some(short) = self.short_key(kind, state_key)? {
            return Ok(short);
        }
        let key = (kind.to_owned(), state_key.to_owned());
        let mut batch = self.db.batch();
        let short = batch.next_count()?;
        batch.put(STATEKEY_SHORTSTATEKEY, &key, &short);
        batch.put(
            SHORTSTATEKEY_STATEKEY,
            &short,
            &Raw(serde_json::to_vec(&key)?),
        );
        batch.commit()?;
        self.remember_key(key, short);
        Ok(short)
    }

    /// (type, state key) of a short id.
    pub fn key_of(&self, short: u64) -> Result<(String, String)> {
        if let Some(key) = self.keys_by_short.lock().get(&short) {
            return Ok(key.clone());
        }
        let Raw(bytes) = self
            .db
            .get(SHORTSTATEKEY_STATEKEY, &short)?
            .ok_or_else(|| Error::internal(format!("unknown short state key {short}")))?;
        let key: (String, String) = serde_json::from_slice(&bytes)?;
        self.remember_key(key.clone(), short);
        Ok(key)
    }

    fn remember_key(&self, key: (String, String), short: u64) {
        self.keys_by_short.lock().insert(short, key.clone());
        self.keys.lock().insert(key, short);
    }

    /// The full state of a snapshot.
    pub fn load(&self, hash: u64) -> Result<Arc<StateMap>> {
        if hash == EMPTY_STATE {
            return Ok(Arc::new(StateMap::new()));
        }
        if let Some(state) = self.snapshots.lock().get(&hash) {
            return Ok(state.clone());
        }
        // Walk to the nearest full snapshot (or a cached one), then apply diffs forward.
        let mut diffs = Vec::new();
        let mut cursor = hash;
        let mut base: Option<Arc<StateMap>> = None;
        loop {
            let diff = self
                .db
                .get(SHORTSTATEHASH_STATEDIFF, &cursor)?
                .ok_or_else(|| Error::internal(format!("state snapshot {cursor} is missing")))?;
            let parent = diff.parent;
            diffs.push(diff);
            match parent {
                None => break,
                Some(EMPTY_STATE) => break,
                Some(p) => {
                    if let Some(cached) = self.snapshots.lock().get(&p) {
                        base = Some(cached.clone());
                        break;
                    }
                    cursor = p;
                }
            }
        }
        let mut state = base.map(|b| (*b).clone()).unwrap_or_default();
        for diff in diffs.iter().rev() {
            for key in &diff.removed {
                state.remove(key);
            }
            state.extend(diff.set.iter().copied());
        }
        let state = Arc::new(state);
        self.snapshots.lock().put(hash, state.clone());
        Ok(state)
    }

    /// Writes a snapshot equal to `target`, as a diff against `parent`.
    pub fn stage_map(&self, batch: &mut Batch, parent: u64, target: &StateMap) -> Result<u64> {
        let base = self.load(parent)?;
        let mut set: Vec<(u64, u64)> = target
            .iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        set.sort_unstable();
        let mut removed: Vec<u64> = base
            .keys()
            .filter(|k| !target.contains_key(k))
            .copied()
            .collect();
        removed.sort_unstable();
        if set.is_empty() && removed.is_empty() {
            return Ok(parent);
        }
        self.stage(batch, parent, set, removed)
    }

    /// Writes a snapshot equal to `parent` with `set` applied; returns its id.
    pub fn stage(
        &self,
        batch: &mut Batch,
        parent: u64,
        set: Vec<(u64, u64)>,
        removed: Vec<u64>,
    ) -> Result<u64> {
        let hash = batch.next_count()?;
        let cached_chain = self.chains.lock().get(&parent).copied();
        let parent_chain = match cached_chain {
            _ if parent == EMPTY_STATE => 0,
            Some(chain) => chain,
            None => {
                self.db
                    .get(SHORTSTATEHASH_STATEDIFF, &parent)?
                    .ok_or_else(|| Error::internal(format!("state snapshot {parent} is missing")))?
                    .chain
            }
        };
        let mut full = (*self.load(parent)?).clone();
        for key in &removed {
            full.remove(key);
        }
        full.extend(set.iter().copied());
        let diff = if parent == EMPTY_STATE || parent_chain + 1 >= MAX_CHAIN {
            let mut entries: Vec<(u64, u64)> = full.iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort_unstable();
            StateDiff {
                parent: None,
                chain: 0,
                set: entries,
                removed: Vec::new(),
            }
        } else {
            StateDiff {
                parent: Some(parent),
                chain: parent_chain + 1,
                set,
                removed,
            }
        };
        batch.put(SHORTSTATEHASH_STATEDIFF, &hash, &diff);
        self.chains.lock().put(hash, diff.chain);
        // Cached before commit: the id is new, so nobody can ask for it earlier.
        self.snapshots.lock().put(hash, Arc::new(full));
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_rebuild_the_full_state_and_chains_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Engine::open(dir.path()).unwrap();
        let store = StateStore::new(db.clone(), 4);
        let mut expected = StateMap::new();
        let mut hash = EMPTY_STATE;
        let mut hashes = Vec::new();
        for i in 0..200u64 {
            let mut batch = db.batch();
            let key = i % 37; // keys get replaced over time
            hash = store
                .stage(&mut batch, hash, vec![(key, 1000 + i)], Vec::new())
                .unwrap();
            batch.commit().unwrap();
            expected.insert(key, 1000 + i);
            hashes.push((hash, expected.clone()));
        }
        // A cold store (nothing cached) reads every snapshot back exactly.
        let cold = StateStore::new(db.clone(), 4);
        for (hash, state) in &hashes {
            assert_eq!(*cold.load(*hash).unwrap(), *state);
        }
        let longest = hashes
            .iter()
            .map(|(h, _)| db.get(SHORTSTATEHASH_STATEDIFF, h).unwrap().unwrap().chain)
            .max()
            .unwrap();
        assert!(longest < MAX_CHAIN);

        let mut batch = db.batch();
        let removed = store.stage(&mut batch, hash, vec![], vec![0, 1]).unwrap();
        batch.commit().unwrap();
        let state = StateStore::new(db, 4).load(removed).unwrap();
        assert!(!state.contains_key(&0) && !state.contains_key(&1) && state.contains_key(&2));
    }

    #[test]
    fn short_keys_are_stable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Engine::open(dir.path()).unwrap();
        let store = StateStore::new(db.clone(), 4);
        let a = store.short_key_or_create("m.room.member", "@a:x").unwrap();
        assert_eq!(
            store.short_key_or_create("m.room.member", "@a:x").unwrap(),
            a
        );
        assert_eq!(store.short_key("m.room.name", "").unwrap(), None);
        let fresh = StateStore::new(db, 4);
        assert_eq!(fresh.short_key("m.room.member", "@a:x").unwrap(), Some(a));
        assert_eq!(
            fresh.key_of(a).unwrap(),
            ("m.room.member".to_owned(), "@a:x".to_owned())
        );
    }
}
