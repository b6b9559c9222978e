//! Push: which events notify whom, the unread counts built from that, and
//! the notifications sent to the users' pushers.
//!
//! When an event is written, every joined local member but the sender gets the
//! event evaluated against their push rules (ruma's engine; `rules`). A
//! notifying event is recorded for that user: a row counted until a read
//! receipt passes it, a row in the user's notification log (`GET
//! /notifications`), and an outbox item for each of the user's pushers
//! (`pushers`), which `gateway` delivers. A read receipt deletes what it
//! covers, so the counts are what is left, and queues a badge update.
//!
//! The outbox items go into the event's own batch. The unread rows and log
//! entries of all its users go into it as one pending row (`PendingLog`),
//! which a writer task spreads into per-user rows a moment later: in a group,
//! two rows per member were most of the cost of writing a message, paid
//! before anyone could receive it. Every reader of those rows spreads what
//! is pending first (cheap when nothing is), a start after a crash spreads
//! what was left, and the unread counts of new events come from memory
//! (`note_staged`) meanwhile.

pub mod gateway;
mod profiles;
pub mod pushers;
pub mod rules;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use lru::LruCache;
use parking_lot::Mutex;

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::AnySyncTimelineEvent,
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    outbox::{Destination, Outbox},
    rooms::{Pdu, Rooms},
    storage::{
        Batch, COUNT_PENDINGLOG, Engine, Key, Raw as Bytes, USERIDCOUNT_PUSHLOG,
        USERIDSHORTROOMIDCOUNT_NOTIFY, prefix,
    },
    users::Users,
    util::now_ms,
};

use self::{
    pushers::Pushers,
    rules::{PushRules, RulesShape},
};

/// One user to notify about one event.
#[derive(Debug, Clone)]
pub struct Notify {
    pub user: OwnedUserId,
    pub highlight: bool,
    /// The thread root, for events in a thread.
    pub thread: Option<OwnedEventId>,
    /// What the user's rules said to do (shared by users who got the same
    /// evaluation).
    pub actions: Arc<Vec<Action>>,
    /// The user's pushers to send it to.
    pub pushers: Vec<Destination>,
    /// Counted as unread in the room (false for an invite: the invitee is
    /// not in the room, and joining must not start with it unread).
    pub counted: bool,
}

/// What a pusher's outbox item asks the gateway courier to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PushItem {
    /// A notifying event.
    Event {
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        short_room: u64,
        count: u64,
        actions: Vec<Action>,
        /// See [`Notify::counted`]; an uncounted notification is skipped
        /// once the invite has been answered.
        #[serde(default = "yes")]
        counted: bool,
    },
    /// The unread counts changed by reading: the badge is updated.
    Badge,
}

/// How long the log writer gathers events before spreading their entries,
/// so that a burst is written in one batch.
const LOG_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// One event's rows for its notified users, until spread: their unread rows
/// and their log entries.
#[derive(Debug, Serialize, Deserialize)]
struct PendingLog {
    room_id: OwnedRoomId,
    short_room: u64,
    event_id: OwnedEventId,
    /// The event's thread root, for events in a thread.
    thread: Option<OwnedEventId>,
    ts: u64,
    /// The distinct action lists: in a group most users share one.
    actions: Vec<Vec<Action>>,
    /// (user, index into `actions`, counted).
    users: Vec<(OwnedUserId, usize, bool)>,
}

/// Per-user rows spread from pending rows: (user, room, count) -> unread
/// record, (user, count) -> log entry.
#[derive(Default)]
struct Spread {
    unread: Vec<((OwnedUserId, u64, u64), Vec<u8>)>,
    logged: Vec<((OwnedUserId, u64), Vec<u8>)>,
}

impl Spread {
    /// Stages the rows in key order: consecutive inserts into RocksDB's
    /// memtable then land next to each other (each user's rows of the
    /// events spread together), which is markedly cheaper than scattered ones.
    fn stage(mut self, batch: &mut Batch) {
        self.unread.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.logged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, record) in self.unread {
            batch.put(USERIDSHORTROOMIDCOUNT_NOTIFY, &key, &Bytes(record));
        }
        for (key, entry) in self.logged {
            batch.put(USERIDCOUNT_PUSHLOG, &key, &Bytes(entry));
        }
    }
}

/// One event's unread rows and log entries, from its pending row.
fn spread_one(spread: &mut Spread, count: u64, pending: PendingLog) -> Result<()> {
    // The unread row is the same for every user but for `highlight`.
    let mut records: [Option<Vec<u8>>; 2] = [None, None];
    for (user, actions, counted) in pending.users {
        let actions = pending.actions.get(actions).cloned().unwrap_or_default();
        if counted {
            let highlight = actions.iter().any(|a| a.is_highlight());
            let record = match &mut records[usize::from(highlight)] {
                Some(record) => record.clone(),
                slot => slot
                    .insert(serde_json::to_vec(&json!({
                        "event_id": pending.event_id,
                        "highlight": highlight,
                        "thread": pending.thread,
                    }))?)
                    .clone(),
            };
            spread
                .unread
                .push(((user.clone(), pending.short_room, count), record));
        }
        let logged = LoggedNotification {
            room_id: pending.room_id.clone(),
            short_room: pending.short_room,
            event_id: pending.event_id.clone(),
            actions,
            ts: pending.ts,
            counted,
        };
        spread
            .logged
            .push(((user, count), serde_json::to_vec(&logged)?));
    }
    Ok(())
}

/// One entry of a user's notification log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoggedNotification {
    room_id: OwnedRoomId,
    short_room: u64,
    event_id: OwnedEventId,
    actions: Vec<Action>,
    ts: u64,
    #[serde(default = "yes")]
    counted: bool,
}

fn yes() -> bool {
    true
}

/// Unread counts of a user in a room.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnreadCounts {
    pub notifications: u64,
    pub highlights: u64,
    /// Per thread root.
    pub threads: BTreeMap<String, (u64, u64)>,
}

/// A page of `GET /notifications`.
#[derive(Debug)]
pub struct NotificationPage {
    pub notifications: Vec<Value>,
    pub next_token: Option<String>,
}

/// Push rules, pushers and the outbox that carries notifications to them.
#[derive(Debug)]
pub struct Push {
    db: Engine,
    pub rules: PushRules,
    pub pushers: Pushers,
    profiles: profiles::Profiles,
    pub outbox: Arc<Outbox>,
    /// `push.enabled`: whether notifications are queued for pushers.
    deliver: bool,
    /// Per (user, room), the counted notification rows staged recently, so
    /// that counting adds them from memory instead of reading them back.
    staged: Mutex<LruCache<(OwnedUserId, u64), StagedRows>>,
    /// Rung when an event's log entries are pending (see the module notes).
    log_bell: tokio::sync::watch::Sender<()>,
    /// Held while spreading, so that two spreads do not interleave.
    spreading: Mutex<()>,
    /// Every pending row below this count has been spread.
    spread_from: AtomicU64,
}

impl Push {
    pub fn new(db: Engine, users: Users, outbox: Arc<Outbox>, deliver: bool) -> Self {
        Self {
            rules: PushRules::new(users),
            pushers: Pushers::new(db.clone()),
            profiles: profiles::Profiles::new(),
            db,
            outbox,
            deliver,
            staged: Mutex::new(LruCache::new(
                NonZeroUsize::new(COUNTS_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            log_bell: tokio::sync::watch::channel(()).0,
            spreading: Mutex::new(()),
            spread_from: AtomicU64::new(0),
        }
    }

    /// Spreads what a previous run left pending, then starts the task that
    /// spreads new entries. It ends with the server.
    pub fn start_log_writer(self: &Arc<Self>) -> Result<()> {
        self.spread_log()?;
        let mut bell = self.log_bell.subscribe();
        let push = Arc::downgrade(self);
        tokio::spawn(async move {
            while bell.changed().await.is_ok() {
                tokio::time::sleep(LOG_GATHER).await;
                let Some(push) = push.upgrade() else { return };
                push.db.wait_quiet().await;
                if let Err(e) = push.spread_log() {
                    tracing::warn!(error = %e, "cannot write notification logs");
                }
            }
        });
        Ok(())
    }

    /// Writes the pending rows into the users' unread rows and logs. Cheap
    /// when nothing is pending: readers call it before reading either.
    pub fn spread_log(&self) -> Result<()> {
        // Every marker up to the visible count is committed; all below
        // `spread_from` were spread before.
        if self.db.visible_count() < self.spread_from.load(Ordering::Acquire) {
            return Ok(());
        }
        let _spreading = self.spreading.lock();
        let upto = self.db.visible_count();
        let from = self.spread_from.load(Ordering::Acquire);
        let mut batch = self.db.batch();
        let mut spread = Spread::default();
        for row in self.db.iter(COUNT_PENDINGLOG, &[], &from.encode(), true) {
            let (count, Bytes(bytes)) = row?;
            if count > upto {
                break;
            }
            batch.delete(COUNT_PENDINGLOG, &count);
            match serde_json::from_slice::<PendingLog>(&bytes) {
                Ok(pending) => spread_one(&mut spread, count, pending)?,
                Err(e) => tracing::warn!(error = %e, count, "dropping an unreadable pending log"),
            }
        }
        spread.stage(&mut batch);
        if !batch.is_empty() {
            batch.commit()?;
        }
        self.spread_from.store(upto + 1, Ordering::Release);
        Ok(())
    }

    /// Records a counted row staged for `user` at `count`, before its batch
    /// commits: a reader that sees the count visible sees the row here too.
    fn note_staged(&self, user: &UserId, short_room: u64, count: u64, n: &Notify) {
        let mut staged = self.staged.lock();
        let entry = staged.get_or_insert_mut((user.to_owned(), short_room), || StagedRows {
            // Rows staged before this entry have counts no higher than any
            // handed out so far.
            complete_above: self.db.reserved_count(),
            rows: VecDeque::new(),
        });
        if entry.rows.len() == MAX_STAGED_ROWS
            && let Some((dropped, _, _)) = entry.rows.pop_front()
        {
            entry.complete_above = entry.complete_above.max(dropped);
        }
        let thread = n.thread.as_ref().map(ToString::to_string);
        entry.rows.push_back((count, n.highlight, thread));
    }

    /// Adds the rows in (after, upto] to `counts` from memory and forgets
    /// those up to `upto`; false (nothing added) when memory does not hold
    /// every row of the range.
    fn take_staged(
        &self,
        key: &(OwnedUserId, u64),
        (after, upto): (u64, u64),
        counts: &mut UnreadCounts,
    ) -> bool {
        let mut staged = self.staged.lock();
        let Some(entry) = staged.get_mut(key) else {
            return false;
        };
        if after < entry.complete_above {
            return false;
        }
        for (count, highlight, thread) in &entry.rows {
            if *count > after && *count <= upto {
                add_row(counts, *highlight, thread.as_deref());
            }
        }
        entry.rows.retain(|(count, _, _)| *count > upto);
        entry.complete_above = entry.complete_above.max(upto);
        true
    }

    /// Which members to notify about a new event of `room`, per their push rules.
    pub async fn evaluate(&self, rooms: &Rooms, room: &RoomId, pdu: &Pdu) -> Result<Vec<Notify>> {
        let joined = rooms.joined_local_members(room)?;
        // An invitee is not a member yet, but `.m.rule.invite_for_me` is for them.
        let invitee =
            local_invitee(rooms, pdu).filter(|user| !joined.iter().any(|(m, _)| m == user));
        if joined.len() + usize::from(invitee.is_some()) <= 1 {
            return Ok(Vec::new());
        }
        let pushers = self.deliver.then_some(&self.pushers);
        let profile = self
            .profiles
            .get(&self.db, room, &joined, &self.rules, pushers)?;
        let invitee_profile = invitee
            .as_deref()
            .map(|user| profiles::MemberProfile::read(user, &self.rules, pushers))
            .transpose()?;
        let member_count = UInt::new_saturating(joined.len() as u64);
        let json = pdu.to_client_json(&Map::new())?;
        let mentions = Mentions::of(&json, pdu);
        let event: Raw<AnySyncTimelineEvent> =
            Raw::from_json(serde_json::value::RawValue::from_string(json)?);
        // Flattened once for every member, not once per member.
        let flat = FlattenedJson::from_raw(&event);
        let power_levels: PushConditionPowerLevelsCtx = rooms.power_levels(room)?.into();
        let thread = crate::rooms::thread_root_of(pdu);
        let mut notify = Vec::new();
        // Actions per rules shape, for members the event does not mention: in
        // a group most members share one evaluation.
        let mut shared: HashMap<RulesShape, Arc<Vec<Action>>> = HashMap::new();
        let members = joined
            .iter()
            .map(|(m, n)| (m.as_ref(), n.as_str()))
            .zip(profile.profiles.iter());
        let invited = invitee
            .as_deref()
            .map(|user| (user, user.localpart()))
            .zip(invitee_profile.as_ref());
        for ((user, display_name), member) in members.chain(invited) {
            if user == pdu.sender() {
                continue;
            }
            let rules = &member.rules;
            let mentioned = mentions.may_concern(user, display_name);
            let known = (!mentioned)
                .then(|| shared.get(&rules.shape).cloned())
                .flatten();
            let actions = match known {
                Some(actions) => actions,
                None => {
                    let ctx = PushConditionRoomCtx::new(
                        room.to_owned(),
                        member_count,
                        user.to_owned(),
                        display_name.to_owned(),
                    )
                    .with_power_levels(power_levels.clone());
                    let actions = Arc::new(first_match(&rules.set, &flat, &ctx).await);
                    if !mentioned {
                        shared.insert(rules.shape, actions.clone());
                    }
                    actions
                }
            };
            if !actions.iter().any(|a| a.should_notify()) {
                continue;
            }
            let highlight = actions.iter().any(|a| a.is_highlight());
            let counted = invitee.as_deref() != Some(user);
            notify.push(Notify {
                user: user.to_owned(),
                highlight,
                thread: thread.clone(),
                actions,
                pushers: member.pushers.clone(),
                counted,
            });
        }
        Ok(notify)
    }

    /// Records notifications in the event's batch: the unread rows, the
    /// notification log and the pushers' outbox items.
    pub fn stage(
        &self,
        batch: &mut Batch,
        room: &RoomId,
        short_room: u64,
        count: u64,
        event: &OwnedEventId,
        notify: &[Notify],
    ) -> Result<()> {
        let mut log = PendingLog {
            room_id: room.to_owned(),
            short_room,
            event_id: event.clone(),
            thread: notify.first().and_then(|n| n.thread.clone()),
            ts: now_ms(),
            actions: Vec::new(),
            users: Vec::with_capacity(notify.len()),
        };
        // Users given the same evaluation share one `Arc` of actions.
        let mut distinct: Vec<&Arc<Vec<Action>>> = Vec::new();
        for n in notify {
            if n.counted {
                self.note_staged(&n.user, short_room, count, n);
            }
            let actions = match distinct.iter().position(|a| Arc::ptr_eq(a, &n.actions)) {
                Some(i) => i,
                None => {
                    distinct.push(&n.actions);
                    log.actions.push(n.actions.to_vec());
                    log.actions.len() - 1
                }
            };
            log.users.push((n.user.clone(), actions, n.counted));
            if n.pushers.is_empty() {
                continue;
            }
            let item = PushItem::Event {
                event_id: event.clone(),
                room_id: room.to_owned(),
                short_room,
                count,
                actions: n.actions.to_vec(),
                counted: n.counted,
            };
            for to in &n.pushers {
                self.outbox.stage(batch, to, &item)?;
            }
        }
        if !log.users.is_empty() {
            batch.put(COUNT_PENDINGLOG, &count, &Bytes(serde_json::to_vec(&log)?));
            // The writer waits a moment before it looks, by when this batch
            // has committed; a batch slower than that waits for the next ring.
            self.log_bell.send_replace(());
        }
        Ok(())
    }

    /// Queues a badge update for each of the user's pushers in `batch`.
    fn stage_badge(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        if !self.deliver {
            return Ok(());
        }
        for to in self.pushers.destinations(user)? {
            self.outbox.stage(batch, &to, &PushItem::Badge)?;
        }
        Ok(())
    }

    /// `GET /notifications`: newest first, from before `from` (a token this
    /// returned), at most `limit`, optionally only the highlighted ones.
    pub fn notifications(
        &self,
        rooms: &Rooms,
        user: &UserId,
        from: Option<&str>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<NotificationPage> {
        let before = match from {
            Some(token) => token.parse::<u64>().map_err(|_| {
                crate::error::Error::invalid_param(format!("Invalid from token {token:?}"))
            })?,
            None => u64::MAX,
        };
        self.spread_log()?;
        let p = prefix(&(user.to_owned(),));
        // Backward iteration starts below `start`.
        let start = (user.to_owned(), before).encode();
        let mut notifications = Vec::new();
        let mut last = None;
        for row in self.db.iter(USERIDCOUNT_PUSHLOG, &p, &start, false) {
            let ((_, count), Bytes(bytes)) = row?;
            if count >= before {
                continue;
            }
            if notifications.len() == limit {
                break;
            }
            last = Some(count);
            let Ok(logged) = serde_json::from_slice::<LoggedNotification>(&bytes) else {
                continue;
            };
            if only_highlight && !logged.actions.iter().any(|a| a.is_highlight()) {
                continue;
            }
            let Some(short) = rooms.short_event_id(&logged.event_id)? else {
                continue;
            };
            let (Some(pdu), Some(meta)) = (rooms.pdu(short)?, rooms.event_meta(short)?) else {
                continue;
            };
            let event = rooms.client_event_json(&pdu, &meta, None)?;
            let read = if logged.counted {
                !self.db.contains(
                    USERIDSHORTROOMIDCOUNT_NOTIFY,
                    &(user.to_owned(), logged.short_room, count),
                )?
            } else {
                // An invite is read once it is answered.
                rooms.membership(&logged.room_id, user)?.as_deref() != Some("invite")
            };
            notifications.push(json!({
                "actions": logged.actions,
                "event": serde_json::from_str::<Value>(&event)?,
                "profile_tag": null,
                "read": read,
                "room_id": logged.room_id,
                "ts": logged.ts,
            }));
        }
        let next_token = match last {
            Some(count) if notifications.len() == limit => Some(count.to_string()),
            _ => None,
        };
        Ok(NotificationPage {
            notifications,
            next_token,
        })
    }

    /// Deletes notification log entries older than `retention_ms`.
    pub fn prune_log(&self, retention_ms: u64) -> Result<usize> {
        let cutoff = now_ms().saturating_sub(retention_ms);
        self.spread_log()?;
        let mut batch = self.db.batch();
        let mut pruned = 0;
        for row in self.db.iter(USERIDCOUNT_PUSHLOG, &[], &[], true) {
            let (key, Bytes(bytes)) = row?;
            let old = serde_json::from_slice::<LoggedNotification>(&bytes)
                .map_or(true, |n| n.ts < cutoff);
            if old {
                batch.delete(USERIDCOUNT_PUSHLOG, &key);
                pruned += 1;
            }
            if pruned > 0 && pruned % 10_000 == 0 {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
            }
        }
        batch.commit()?;
        Ok(pruned)
    }
}

/// The local user an invite event invites.
fn local_invitee(rooms: &Rooms, pdu: &Pdu) -> Option<OwnedUserId> {
    if pdu.kind().to_string() != "m.room.member"
        || pdu.content_str("membership").as_deref() != Some("invite")
    {
        return None;
    }
    let user = UserId::parse(pdu.state_key()?).ok()?;
    (user.server_name() == rooms.server_name()).then_some(user)
}

/// The actions of the first of `rules` that applies to the event (what
/// ruma's `Ruleset::get_actions` does, on an event flattened beforehand).
/// What of an event can make a member's rules act differently from another
/// member's with the same [`RulesShape`]: the only user-specific parts of
/// a ruleset are its owner's user ID and localpart (in mention, invite and
/// user-name rules), and the display name (`contains_display_name`).
struct Mentions {
    /// The event's JSON, lowercased (IDs and localparts are never escaped).
    json: String,
    /// The body, lowercased, where display names are looked for.
    body: String,
}

impl Mentions {
    fn of(json: &str, pdu: &Pdu) -> Self {
        Self {
            json: json.to_lowercase(),
            body: pdu.content_str("body").unwrap_or_default().to_lowercase(),
        }
    }

    /// Whether the event might mention `user` (a superset of what any rule
    /// matches: a pattern can only match text that contains its literals).
    fn may_concern(&self, user: &UserId, display_name: &str) -> bool {
        let localpart = user.localpart().to_lowercase();
        let name = display_name.to_lowercase();
        self.json.contains(&localpart) || (!name.is_empty() && self.body.contains(&name))
    }
}

async fn first_match(
    rules: &Ruleset,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> Vec<Action> {
    for rule in rules {
        if rule.applies(event, ctx).await {
            return rule.actions().to_vec();
        }
    }
    Vec::new()
}

/// Users' rooms whose counts are kept in memory.
const COUNTS_CACHE: usize = 50_000;

/// Counts of one user in one room, covering the notification rows up to `upto`.
#[derive(Debug, Clone, Default)]
struct CachedCounts {
    counts: UnreadCounts,
    upto: u64,
}

/// Counted rows staged for one (user, room), kept until counting has taken
/// them. Complete above `complete_above`: every row staged with a higher
/// count is in `rows` (noted before its batch commits).
///
/// A batch that fails after staging leaves a row here that storage never
/// got: it counts as unread until the user's next read receipt.
#[derive(Debug)]
struct StagedRows {
    complete_above: u64,
    /// (count, highlight, thread root), ascending by when they were staged.
    rows: VecDeque<(u64, bool, Option<String>)>,
}

/// Counts one notification row.
fn add_row(counts: &mut UnreadCounts, highlight: bool, thread: Option<&str>) {
    let highlight = u64::from(highlight);
    match thread {
        Some(root) => {
            let entry = counts.threads.entry(root.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += highlight;
        }
        None => {
            counts.notifications += 1;
            counts.highlights += highlight;
        }
    }
}

/// Rows kept per (user, room) for a user who does not sync meanwhile.
const MAX_STAGED_ROWS: usize = 256;

/// The stored part of a notification row that counting needs.
#[derive(serde::Deserialize)]
struct CountedRow<'a> {
    #[serde(default)]
    highlight: bool,
    #[serde(borrow, default)]
    thread: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug)]
pub struct Notifications {
    db: Engine,
    push: Arc<Push>,
    /// Counts per (user, room), advanced by reading only rows newer than what
    /// they cover: every sync of every room asks for counts, and a room with
    /// many unread events would otherwise be rescanned each time.
    cache: Mutex<LruCache<(OwnedUserId, u64), CachedCounts>>,
}

impl Notifications {
    pub fn new(db: Engine, push: Arc<Push>) -> Self {
        let capacity = NonZeroUsize::new(COUNTS_CACHE).unwrap_or(NonZeroUsize::MIN);
        Self {
            db,
            push,
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// A read receipt at `upto`: clears the notifications it covers. `thread`:
    /// `None` for an unthreaded receipt (everything), `Some("main")` for the
    /// main timeline, `Some(root)` for one thread.
    pub fn clear_read(
        &self,
        user: &UserId,
        short_room: u64,
        upto: u64,
        thread: Option<&str>,
    ) -> Result<()> {
        // Rows still pending would come back unread after the deletion.
        self.push.spread_log()?;
        let room_prefix = prefix(&(user.to_owned(), short_room));
        // Held across the commit so that no count is cached from before it.
        let mut cache = self.cache.lock();
        let mut batch = self.db.batch();
        for row in self.db.iter(
            USERIDSHORTROOMIDCOUNT_NOTIFY,
            &room_prefix,
            &room_prefix,
            true,
        ) {
            let ((u, room, count), Bytes(record)) = row?;
            if count > upto {
                break;
            }
            let record: Value = serde_json::from_slice(&record)?;
            let in_thread = record["thread"].as_str();
            let covered = match thread {
                None => true,
                Some("main") => in_thread.is_none(),
                Some(root) => in_thread == Some(root),
            };
            if covered {
                batch.delete(USERIDSHORTROOMIDCOUNT_NOTIFY, &(u, room, count));
            }
        }
        if !batch.is_empty() {
            self.push.stage_badge(&mut batch, user)?;
            batch.commit()?;
            cache.pop(&(user.to_owned(), short_room));
        }
        Ok(())
    }

    pub fn counts(&self, user: &UserId, short_room: u64) -> Result<UnreadCounts> {
        // Rows up to the visible count are all committed: none can appear
        // below it later, so what is cached stays exact until a receipt.
        let upto = self.db.visible_count();
        let key = (user.to_owned(), short_room);
        let mut cache = self.cache.lock();
        // Updated in place: one lookup, and the key is built once.
        let cached = match cache.get_mut(&key) {
            Some(cached) => cached,
            None => cache.get_or_insert_mut(key.clone(), CachedCounts::default),
        };
        if cached.upto < upto {
            // The new rows were usually just staged: added from memory.
            let range = (cached.upto, upto);
            if !self.push.take_staged(&key, range, &mut cached.counts) {
                // Counted on a copy, so that a failed read leaves the cache as it was.
                let mut counts = cached.counts.clone();
                self.count_rows(user, short_room, cached.upto, upto, &mut counts)?;
                cached.counts = counts;
            }
            cached.upto = upto;
        }
        Ok(cached.counts.clone())
    }

    /// Adds the notification rows in (after, upto] to `counts`.
    fn count_rows(
        &self,
        user: &UserId,
        short_room: u64,
        after: u64,
        upto: u64,
        counts: &mut UnreadCounts,
    ) -> Result<()> {
        self.push.spread_log()?;
        let room_prefix = prefix(&(user.to_owned(), short_room));
        let start = (user.to_owned(), short_room, after.saturating_add(1)).encode();
        for row in self
            .db
            .iter(USERIDSHORTROOMIDCOUNT_NOTIFY, &room_prefix, &start, true)
        {
            let ((_, _, count), Bytes(record)) = row?;
            if count > upto {
                break;
            }
            let row: CountedRow = serde_json::from_slice(&record)?;
            add_row(counts, row.highlight, row.thread.as_deref());
        }
        Ok(())
    }

    /// Deletes a user's notifications everywhere (account deactivation).
    pub fn stage_delete_user(batch: &mut Batch, user: &UserId) -> Result<()> {
        let p = prefix(&(user.to_owned(),));
        batch.delete_prefix(USERIDSHORTROOMIDCOUNT_NOTIFY, &p)?;
        batch.delete_prefix(USERIDCOUNT_PUSHLOG, &p)
    }

    /// The badge a push gateway shows: rooms with unread notifications, or
    /// the notifications themselves (`push.group_unread_count_by_room`).
    pub fn badge(&self, rooms: &Rooms, user: &UserId, by_room: bool) -> Result<u64> {
        let mut badge = 0;
        for room in rooms.joined_rooms(user)? {
            let Some(meta) = rooms.meta(&room)? else {
                continue;
            };
            let counts = self.counts(user, meta.short)?;
            let total = counts.notifications + counts.threads.values().map(|t| t.0).sum::<u64>();
            badge += if by_room { u64::from(total > 0) } else { total };
        }
        Ok(badge)
    }

    /// Whether the user's notification for the event at `count` is still unread.
    pub fn is_unread(&self, user: &UserId, short_room: u64, count: u64) -> Result<bool> {
        self.push.spread_log()?;
        self.db.contains(
            USERIDSHORTROOMIDCOUNT_NOTIFY,
            &(user.to_owned(), short_room, count),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::{Notifications, Push};
    use crate::{
        rooms::{
            EventDraft,
            test_support::{Fixture, fixture, user},
        },
        storage::{COUNT_PENDINGLOG, USERIDCOUNT_PUSHLOG, USERIDSHORTROOMIDCOUNT_NOTIFY},
    };

    /// A server starting on `f`'s database: nothing in memory, no writer.
    fn restarted(f: &Fixture) -> (Arc<Push>, Notifications) {
        let db = f.rooms.db().clone();
        let push = Arc::new(Push::new(
            db.clone(),
            crate::users::Users::new(db.clone(), "localhost".try_into().unwrap()),
            crate::outbox::Outbox::new(db.clone(), Default::default()),
            true,
        ));
        (push.clone(), Notifications::new(db, push))
    }

    async fn say(f: &Fixture, body: &str) -> ruma::OwnedEventId {
        let draft = EventDraft::new(
            "m.room.message",
            json!({ "body": body, "msgtype": "m.text" }),
        );
        f.rooms
            .append(&f.room, &user("alice"), draft)
            .await
            .unwrap()
    }

    fn pending(f: &Fixture) -> usize {
        f.rooms.db().iter(COUNT_PENDINGLOG, &[], &[], true).count()
    }

    #[tokio::test]
    async fn pending_rows_are_read_at_once_and_spread_after_a_crash() {
        let f = fixture(ruma::RoomVersionId::V11).await;
        let short_room = f.rooms.require_meta(&f.room).unwrap().short;
        let first = say(&f, "hi").await;
        // No writer runs here, as after a crash right after the send: the
        // rows are pending, none is spread.
        assert_eq!(pending(&f), 1);
        let db = f.rooms.db();
        assert_eq!(db.iter(USERIDCOUNT_PUSHLOG, &[], &[], true).count(), 0);
        assert_eq!(
            db.iter(USERIDSHORTROOMIDCOUNT_NOTIFY, &[], &[], true)
                .count(),
            0
        );

        // Counted from storage (the new server has nothing in memory).
        let (push, notifications) = restarted(&f);
        let counts = notifications.counts(&user("bob"), short_room).unwrap();
        assert_eq!((counts.notifications, counts.highlights), (1, 0));
        assert_eq!(pending(&f), 0);
        let page = push
            .notifications(&f.rooms, &user("bob"), None, 10, false)
            .unwrap();
        assert_eq!(page.notifications.len(), 1, "{:?}", page.notifications);
        assert_eq!(page.notifications[0]["event"]["event_id"], first.as_str());
        assert_eq!(page.notifications[0]["read"], false);
        assert!(
            page.notifications[0]["actions"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("notify")))
        );
        // The sender is not notified of their own message.
        let alice = push
            .notifications(&f.rooms, &user("alice"), None, 10, false)
            .unwrap();
        assert!(alice.notifications.is_empty());

        // Reading the log spreads what is pending first.
        say(&f, "again").await;
        let page = push
            .notifications(&f.rooms, &user("bob"), None, 10, false)
            .unwrap();
        assert_eq!(page.notifications.len(), 2);

        // A read receipt over a pending row clears it for good.
        say(&f, "and again").await;
        assert_eq!(pending(&f), 1);
        let upto = f.rooms.db().visible_count();
        notifications
            .clear_read(&user("bob"), short_room, upto, None)
            .unwrap();
        push.spread_log().unwrap();
        let counts = notifications.counts(&user("bob"), short_room).unwrap();
        assert_eq!(counts.notifications, 0);
        let page = push
            .notifications(&f.rooms, &user("bob"), None, 10, false)
            .unwrap();
        assert!(page.notifications.iter().all(|n| n["read"] == true));

        // A start spreads what was left before serving.
        say(&f, "once more").await;
        assert_eq!(pending(&f), 1);
        let (push, _) = restarted(&f);
        push.start_log_writer().unwrap();
        assert_eq!(pending(&f), 0);
    }
}
