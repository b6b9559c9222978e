//! The outbox: everything that leaves the server waits here, one persistent
//! queue per destination.
//!
//! An item is staged in the same batch as the change that caused it (an event,
//! a receipt), so it exists exactly when that change does. Once the batch
//! commits, the destination's worker wakes, hands the oldest items to the
//! destination kind's courier, and deletes what the courier says is done. A
//! failing destination is retried with capped exponential backoff and jitter;
//! nothing is deleted until it is delivered or refused for good. Items survive
//! restarts: the server resumes every queue that still holds items when it
//! starts.
//!
//! Kinds of destination: push gateways (one queue per pusher) now; remote
//! servers and application services use the same queue later.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use ruma::{OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::{sync::Notify, task::JoinSet};

use crate::{
    config::OutboxConfig,
    error::Result,
    storage::{Batch, DESTINATIONSEQ_OUTBOXITEM, Engine, Key, Raw, prefix},
    util::now_ms,
};

/// Items a worker reads and hands to its courier at once. Federation
/// transactions carry up to 50 PDUs; pushers take one notification per request
/// but may skip superseded ones.
const BATCH: usize = 50;

/// How long a worker with nothing to do stays around before it ends.
const IDLE: Duration = Duration::from_secs(60);

/// Where outbox items go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// A user's pusher: a push gateway, identified as the spec does.
    Pusher {
        user: OwnedUserId,
        app_id: String,
        pushkey: String,
    },
    /// A remote homeserver (federation transactions).
    Federation { server: OwnedServerName },
    /// An application service.
    Appservice { id: String },
}

impl Destination {
    /// The stable key of this destination's queue in storage.
    pub fn key(&self) -> String {
        // Serialising a plain enum of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_key(key: &str) -> Option<Self> {
        serde_json::from_str(key).ok()
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Pusher { .. } => Kind::Pusher,
            Self::Federation { .. } => Kind::Federation,
            Self::Appservice { .. } => Kind::Appservice,
        }
    }
}

/// Destination kinds, each delivered by its own courier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pusher,
    Federation,
    Appservice,
}

/// One queued item as a courier sees it.
#[derive(Debug, Clone)]
pub struct Item {
    pub seq: u64,
    /// When it was queued (ms since the epoch).
    pub queued_at: u64,
    pub payload: Box<RawValue>,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    queued_at: u64,
    payload: Box<RawValue>,
}

/// What a courier made of the items it was given.
#[derive(Debug)]
pub struct Delivery {
    /// The first `done` items are finished with (delivered, or refused for
    /// good) and are deleted.
    pub done: usize,
    pub then: Then,
}

#[derive(Debug)]
pub enum Then {
    /// Go on with whatever is left.
    Continue,
    /// The destination failed; retry the rest after a backoff.
    Retry(String),
    /// The destination no longer exists (a deleted pusher): drop its queue.
    Gone,
}

/// Delivers the items of one destination kind.
pub trait Courier: Send + Sync {
    fn deliver<'a>(&'a self, to: &'a Destination, items: &'a [Item]) -> BoxFuture<'a, Delivery>;
}

/// A running worker's wake-up.
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    /// Set by a wake; cleared by the worker when it reads. A worker only ends
    /// when this is unset, so a wake that races its exit is never lost.
    pending: AtomicBool,
}

pub struct Outbox {
    db: Engine,
    config: OutboxConfig,
    couriers: Mutex<HashMap<Kind, Arc<dyn Courier>>>,
    workers: Mutex<HashMap<Destination, Arc<Slot>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("workers", &self.workers.lock().len())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub fn new(db: Engine, config: OutboxConfig) -> Arc<Self> {
        Arc::new(Self {
            db,
            config,
            couriers: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    /// Queues `payload` for `to` in `batch`; its worker wakes once the batch
    /// has committed.
    pub fn stage(
        self: &Arc<Self>,
        batch: &mut Batch,
        to: &Destination,
        payload: &impl Serialize,
    ) -> Result<()> {
        let seq = batch.next_count()?;
        let item = StoredItem {
            queued_at: now_ms(),
            payload: serde_json::value::to_raw_value(payload)?,
        };
        batch.put(
            DESTINATIONSEQ_OUTBOXITEM,
            &(to.key(), seq),
            &Raw(serde_json::to_vec(&item)?),
        );
        let outbox = self.clone();
        let to = to.clone();
        batch.after_commit(move || outbox.wake(&to));
        Ok(())
    }

    /// Starts delivering `kind` with `courier`, resuming every queue of that
    /// kind that still holds items.
    pub fn start(self: &Arc<Self>, kind: Kind, courier: Arc<dyn Courier>) -> Result<()> {
        self.couriers.lock().insert(kind, courier);
        for to in self.pending_destinations()? {
            if to.kind() == kind {
                self.wake(&to);
            }
        }
        Ok(())
    }

    /// Stops every worker (at shutdown): items stay queued for the next start.
    pub async fn stop(&self) {
        self.couriers.lock().clear();
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        tasks.shutdown().await;
        self.workers.lock().clear();
    }

    /// Queued items of `to`, oldest first (for tests and the admin tools).
    pub fn queued(&self, to: &Destination) -> Result<usize> {
        Ok(self
            .db
            .scan_prefix(DESTINATIONSEQ_OUTBOXITEM, &prefix(&(to.key(),)))?
            .len())
    }

    /// Destinations that have at least one item queued.
    fn pending_destinations(&self) -> Result<Vec<Destination>> {
        let mut found = Vec::new();
        let mut last: Option<String> = None;
        for row in self.db.iter(DESTINATIONSEQ_OUTBOXITEM, &[], &[], true) {
            let ((key, _), _) = row?;
            if last.as_deref() == Some(key.as_str()) {
                continue;
            }
            match Destination::from_key(&key) {
                Some(to) => found.push(to),
                None => tracing::warn!(key, "outbox queue with an unreadable destination"),
            }
            last = Some(key);
        }
        Ok(found)
    }

    /// Makes sure a worker runs for `to` and sees what was just queued.
    fn wake(self: &Arc<Self>, to: &Destination) {
        if !self.couriers.lock().contains_key(&to.kind()) {
            // Not delivering this kind (yet): `start` resumes the queue.
            return;
        }
        let mut workers = self.workers.lock();
        if let Some(slot) = workers.get(to) {
            slot.pending.store(true, Ordering::SeqCst);
            slot.notify.notify_one();
            return;
        }
        let slot = Arc::new(Slot::default());
        slot.pending.store(true, Ordering::SeqCst);
        workers.insert(to.clone(), slot.clone());
        let outbox = self.clone();
        let to = to.clone();
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move { outbox.run(to, slot).await });
    }

    /// One destination's worker: delivers until the queue is empty and stays
    /// idle for a while, then ends.
    async fn run(self: Arc<Self>, to: Destination, slot: Arc<Slot>) {
        let mut failures = 0u32;
        // Reads start above what is known to be finished: deleted items stay
        // behind as tombstones until compaction, and skipping them on every
        // read made a busy queue quadratic.
        let mut after = 0u64;
        loop {
            slot.pending.store(false, Ordering::SeqCst);
            // Every item at or below this was committed before the read, so
            // none can appear there later.
            let visible = self.db.visible_count();
            let items = match self.read(&to, after) {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = %e, destination = to.key(), "cannot read the outbox");
                    Vec::new()
                }
            };
            if items.is_empty() {
                let woken = tokio::time::timeout(IDLE, slot.notify.notified()).await;
                if woken.is_err() && self.retire(&to, &slot) {
                    return;
                }
                continue;
            }
            let Some(courier) = self.couriers.lock().get(&to.kind()).cloned() else {
                self.retire_now(&to);
                return;
            };
            let delivery = courier.deliver(&to, &items).await;
            drop(courier);
            match self.finish(&to, &items, &delivery) {
                Ok(()) => {
                    if let Some(last) = items[..delivery.done.min(items.len())]
                        .last()
                        .map(|i| i.seq)
                    {
                        after = after.max(last.min(visible));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, destination = to.key(), "cannot update the outbox");
                }
            }
            match delivery.then {
                Then::Continue => failures = 0,
                Then::Gone => {
                    self.retire_now(&to);
                    return;
                }
                Then::Retry(reason) => {
                    failures = failures.saturating_add(1);
                    let wait = self.backoff(failures);
                    tracing::info!(
                        destination = to.key(),
                        %reason,
                        retry_in_ms = wait.as_millis() as u64,
                        "delivery failed; will retry"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The oldest queued items of `to` with a seq above `after`.
    fn read(&self, to: &Destination, after: u64) -> Result<Vec<Item>> {
        let p = prefix(&(to.key(),));
        let start = (to.key(), after.saturating_add(1)).encode();
        let mut items = Vec::new();
        for row in self.db.iter(DESTINATIONSEQ_OUTBOXITEM, &p, &start, true) {
            let ((_, seq), Raw(bytes)) = row?;
            match serde_json::from_slice::<StoredItem>(&bytes) {
                Ok(item) => items.push(Item {
                    seq,
                    queued_at: item.queued_at,
                    payload: item.payload,
                }),
                Err(e) => {
                    // Unreadable items would block the queue for good.
                    tracing::warn!(error = %e, seq, "dropping an unreadable outbox item");
                    let mut batch = self.db.batch();
                    batch.delete(DESTINATIONSEQ_OUTBOXITEM, &(to.key(), seq));
                    batch.commit()?;
                }
            }
            if items.len() == BATCH {
                break;
            }
        }
        Ok(items)
    }

    /// Deletes what the courier finished with, or the whole queue if the
    /// destination is gone.
    fn finish(&self, to: &Destination, items: &[Item], delivery: &Delivery) -> Result<()> {
        let mut batch = self.db.batch();
        if matches!(delivery.then, Then::Gone) {
            stage_drop_queue(&mut batch, to)?;
        } else {
            let key = to.key();
            for item in items.iter().take(delivery.done) {
                batch.delete(DESTINATIONSEQ_OUTBOXITEM, &(key.clone(), item.seq));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        batch.commit()
    }

    /// Ends an idle worker unless a wake came in meanwhile.
    fn retire(&self, to: &Destination, slot: &Arc<Slot>) -> bool {
        let mut workers = self.workers.lock();
        if slot.pending.load(Ordering::SeqCst) {
            return false;
        }
        if workers.get(to).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            workers.remove(to);
        }
        true
    }

    fn retire_now(&self, to: &Destination) {
        self.workers.lock().remove(to);
    }

    /// The wait after `failures` failures in a row: doubling from the initial
    /// delay up to the cap, then scaled by a random 50–100 % so that many
    /// queues failing together do not retry in lockstep.
    fn backoff(&self, failures: u32) -> Duration {
        let initial = self.config.retry_initial_ms;
        let cap = self.config.retry_max_ms;
        let exp = initial.saturating_mul(1u64 << failures.saturating_sub(1).min(40));
        let base = exp.min(cap);
        let jitter = 0.5 + 0.5 * random_fraction();
        Duration::from_millis(((base as f64) * jitter) as u64)
    }
}

/// Drops every queued item of `to` in `batch` (a deleted pusher).
pub fn stage_drop_queue(batch: &mut Batch, to: &Destination) -> Result<()> {
    batch.delete_prefix(DESTINATIONSEQ_OUTBOXITEM, &prefix(&(to.key(),)))
}

/// A number in [0, 1) from the system's randomness.
fn random_fraction() -> f64 {
    let bytes = crate::util::random_bytes::<4>();
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(initial: u64, max: u64) -> (tempfile::TempDir, Arc<Outbox>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Engine::open(dir.path()).unwrap();
        let config = OutboxConfig {
            retry_initial_ms: initial,
            retry_max_ms: max,
        };
        (dir, Outbox::new(db, config))
    }

    #[test]
    fn destination_keys_round_trip() {
        let to = Destination::Pusher {
            user: "@a:x".try_into().unwrap(),
            app_id: "app".into(),
            pushkey: "key/with\"odd chars".into(),
        };
        assert_eq!(Destination::from_key(&to.key()), Some(to));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let (_dir, outbox) = outbox(100, 1_000);
        for (failures, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let wait = outbox.backoff(failures).as_millis() as u64;
            assert!(
                wait >= base / 2 && wait <= base,
                "{failures} failures: {wait} ms not in [{}, {base}]",
                base / 2
            );
        }
    }

    #[test]
    fn staged_items_are_queued_only_when_committed() {
        let (_dir, outbox) = outbox(100, 1_000);
        let to = Destination::Appservice {
            id: "bridge".into(),
        };
        let mut batch = outbox.db.batch();
        outbox
            .stage(&mut batch, &to, &serde_json::json!({"n": 1}))
            .unwrap();
        drop(batch);
        assert_eq!(outbox.queued(&to).unwrap(), 0);
        let mut batch = outbox.db.batch();
        outbox
            .stage(&mut batch, &to, &serde_json::json!({"n": 2}))
            .unwrap();
        batch.commit().unwrap();
        assert_eq!(outbox.queued(&to).unwrap(), 1);
        assert_eq!(outbox.pending_destinations().unwrap(), vec![to]);
    }
}
