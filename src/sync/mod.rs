//! `/sync` v3: everything that concerns a device since its last sync token.
//!
//! A sync first registers watches (room timelines, the user's memberships and
//! account data), then reads everything up to the visible count, and if that is
//! empty sleeps on the watches until something arrives, the timeout passes or
//! the server stops. Registering before reading means no change is lost.

mod filter;
mod live;
pub mod token;
mod watches;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use ruma::OwnedRoomId;
use serde::Serialize;
use serde_json::{Value, json, value::RawValue};

use self::watches::Watches;
pub use self::{filter::SyncFilter, live::Live};
use crate::{
    Services,
    auth::Identity,
    error::Result,
    push::rules::PUSH_RULES,
    rooms::{StoredEvent, TimelineSlice},
};

/// Longest long-poll a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct SyncRequest {
    pub since: Option<String>,
    /// `set_presence`: online (the default), unavailable or offline.
    pub set_presence: String,
    pub filter: SyncFilter,
    pub full_state: bool,
    pub timeout: Option<Duration>,
    /// MSC4222: send `state_after` (the state at the end of the timeline)
    /// instead of `state`.
    pub use_state_after: bool,
    /// Whether `since` acknowledges what it covers (to-device deletion). Over
    /// HTTP it does; the WebSocket acknowledges with explicit `ack` frames.
    pub since_acknowledges: bool,
}

/// The device confirms having received everything up to `count` (an `ack`
/// frame on the WebSocket; the next `since` over HTTP): its to-device
/// messages up to there can go, and delivered receipts follow.
pub fn acknowledge(s: &Services, who: &Identity, count: u64) -> Result<()> {
    s.to_device
        .acknowledge(&who.user_id, &who.device_id, count)?;
    delivered(s, who, count);
    Ok(())
}

/// The user has received everything up to `count`: delivered receipts. A
/// failure here is logged, never the sync's.
fn delivered(s: &Services, who: &Identity, count: u64) {
    if let Err(e) = s.delivered.acknowledged(&s.rooms, &who.user_id, count) {
        tracing::warn!(error = %e, user = %who.user_id, "cannot record delivered receipts");
    }
}

/// Answers a sync, waiting up to the timeout for something new.
pub async fn sync(s: &Services, who: &Identity, req: SyncRequest) -> Result<SyncResponse> {
    let since = req
        .since
        .as_deref()
        .map(|t| token::decode(&who.user_id, t))
        .transpose()?;
    s.presence.synced(&who.user_id, &req.set_presence)?;
    if let Some(acknowledged) = since.filter(|_| req.since_acknowledges) {
        acknowledge(s, who, acknowledged)?;
    }
    let deadline = tokio::time::Instant::now() + req.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let mut stopping = s.stopping.subscribe();
    // A device waiting in a long-poll is still syncing: presence hears so
    // often enough that the poll never outlasts the offline timeout.
    let keepalive = presence_keepalive(s);
    let mut next_keepalive = tokio::time::Instant::now() + keepalive;
    loop {
        if tokio::time::Instant::now() >= next_keepalive {
            s.presence.synced(&who.user_id, &req.set_presence)?;
            next_keepalive += keepalive;
        }
        let mut watches = Watches::register(s, who, false)?;
        let upto = s.db.visible_count();
        let mut response = build(s, who, since, upto, &req)?;
        let empty = since.is_some() && response.is_empty() && !req.full_state;
        let waited_long_enough = tokio::time::Instant::now() >= deadline || *stopping.borrow();
        if !empty || waited_long_enough {
            if empty && let Some(token) = &req.since {
                // Nothing for the device: its token stays. What moved the
                // count (its own delivered receipts, say) was not for it.
                response.next_batch = token.clone();
            }
            return Ok(response);
        }
        tokio::select! {
            () = watches.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = tokio::time::sleep_until(next_keepalive) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
}

/// How often a waiting sync tells presence that the device is still there.
pub fn presence_keepalive(s: &Services) -> Duration {
    Duration::from_millis(s.config.presence.offline_timeout_ms / 2).max(Duration::from_secs(1))
}

/// A sync response. Event lists hold each event's cached client JSON, so a
/// sync never rebuilds events as JSON values.
#[derive(Debug, Serialize)]
pub struct SyncResponse {
    next_batch: String,
    rooms: Rooms,
    account_data: Events<Value>,
    presence: Events<Value>,
    to_device: Events<Value>,
    device_lists: DeviceLists,
    device_one_time_keys_count: BTreeMap<String, u64>,
    device_unused_fallback_key_types: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Rooms {
    join: BTreeMap<OwnedRoomId, JoinedRoom>,
    invite: BTreeMap<OwnedRoomId, Value>,
    leave: BTreeMap<OwnedRoomId, LeftRoom>,
    knock: BTreeMap<OwnedRoomId, Value>,
}

#[derive(Debug, Serialize)]
struct Events<T> {
    events: Vec<T>,
}

#[derive(Debug, Default, Serialize)]
struct DeviceLists {
    changed: Vec<ruma::OwnedUserId>,
    left: Vec<ruma::OwnedUserId>,
}

#[derive(Debug, Serialize)]
struct Timeline {
    events: Vec<Box<RawValue>>,
    limited: bool,
    prev_batch: String,
}

#[derive(Debug, Serialize)]
struct JoinedRoom {
    timeline: Timeline,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<Events<Box<RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_after: Option<Events<Box<RawValue>>>,
    ephemeral: Events<Value>,
    account_data: Events<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Value>,
    unread_notifications: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unread_thread_notifications: Option<Value>,
}

#[derive(Debug, Serialize)]
struct LeftRoom {
    timeline: Timeline,
    state: Events<Box<RawValue>>,
    account_data: Events<Value>,
}

impl SyncResponse {
    pub fn next_batch(&self) -> &str {
        &self.next_batch
    }

    /// Nothing new for the device.
    pub fn is_empty(&self) -> bool {
        let r = &self.rooms;
        r.join.is_empty()
            && r.invite.is_empty()
            && r.leave.is_empty()
            && r.knock.is_empty()
            && self.account_data.events.is_empty()
            && self.to_device.events.is_empty()
            && self.presence.events.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
    }
}

/// Everything in (since, upto] for this device.
fn build(
    s: &Services,
    who: &Identity,
    since: Option<u64>,
    upto: u64,
    req: &SyncRequest,
) -> Result<SyncResponse> {
    let user = &who.user_id;
    let after = since.unwrap_or(0);
    let mut rooms = Rooms::default();

    // Room account data, grouped by room; global account data.
    let mut room_account_data: std::collections::HashMap<OwnedRoomId, Vec<Value>> =
        Default::default();
    let mut global_account_data = Vec::new();
    let mut push_rules_sent = false;
    for change in s.users.account_data_between(user, after, upto)? {
        let content: Value = if change.room.is_none() && change.kind == PUSH_RULES {
            // The effective rules: the stored ones merged into the defaults.
            push_rules_sent = true;
            s.push.rules.as_account_data(user)?
        } else {
            serde_json::from_str(change.content.get())?
        };
        let event = json!({ "type": change.kind, "content": content });
        match change.room {
            Some(room) => room_account_data.entry(room).or_default().push(event),
            None if req.filter.account_data_allows(&change.kind) => global_account_data.push(event),
            None => {}
        }
    }

    // Clients learn their push rules from the first sync, stored or not.
    if after == 0 && !push_rules_sent && req.filter.account_data_allows(PUSH_RULES) {
        let content = s.push.rules.as_account_data(user)?;
        global_account_data.push(json!({ "type": PUSH_RULES, "content": content }));
    }

    for (room, record) in s.rooms.memberships(user)? {
        if !req.filter.room_allowed(&room) || record.forgotten {
            continue;
        }
        let changed_membership = record.count > after && record.count <= upto;
        // A membership change beyond this response (committed after `upto`
        // was read) is for the next one: until then the previous one holds.
        let membership = if record.count > upto {
            s.rooms
                .membership_before(record.event, user)?
                .unwrap_or_else(|| "leave".to_owned())
        } else {
            record.membership.clone()
        };
        match membership.as_str() {
            "join" => {
                // A room joined since the token is new to this device: send it
                // whole (a profile change of a member who stayed is not a join).
                let fresh = since.is_none() || (record.began() > after && record.began() <= upto);
                let account_data = room_account_data.remove(&room).unwrap_or_default();
                if let Some(section) =
                    joined_room(s, who, &room, after, upto, fresh, account_data, req)?
                {
                    rooms.join.insert(room, section);
                }
            }
            "invite" if changed_membership || since.is_none() => {
                let state = s.rooms.stripped_state(&room, user)?;
                rooms
                    .invite
                    .insert(room, json!({ "invite_state": { "events": state } }));
            }
            "knock" if changed_membership || since.is_none() => {
                let state = s.rooms.stripped_state(&room, user)?;
                rooms
                    .knock
                    .insert(room, json!({ "knock_state": { "events": state } }));
            }
            "leave" | "ban"
                if changed_membership && (since.is_some() || req.filter.include_leave) =>
            {
                let section = left_room(s, who, &room, after, record.count, req)?;
                rooms.leave.insert(room, section);
            }
            _ => {}
        }
    }

    // On an initial sync the client fetches every device list it needs anyway.
    let device_lists = match since {
        Some(after) => {
            let changes = crate::e2ee::device_list_changes(s, user, after, upto)?;
            DeviceLists {
                changed: changes.changed.into_iter().collect(),
                left: changes.left.into_iter().collect(),
            }
        }
        None => DeviceLists::default(),
    };

    Ok(SyncResponse {
        next_batch: token::encode(user, upto),
        rooms,
        account_data: Events {
            events: global_account_data,
        },
        presence: Events {
            events: presence_events(s, user, after, upto, &req.filter)?,
        },
        to_device: Events {
            events: s.to_device.pending(user, &who.device_id, after, upto)?,
        },
        device_lists,
        device_one_time_keys_count: s.e2ee.one_time_key_counts(user, &who.device_id)?,
        device_unused_fallback_key_types: s.e2ee.unused_fallback_key_types(user, &who.device_id)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn joined_room(
    s: &Services,
    who: &Identity,
    room: &ruma::RoomId,
    after: u64,
    upto: u64,
    fresh: bool,
    account_data: Vec<Value>,
    req: &SyncRequest,
) -> Result<Option<JoinedRoom>> {
    let from = if fresh { 0 } else { after };
    let ephemeral = ephemeral_events(s, who, room, from, upto)?;
    let quiet = account_data.is_empty() && ephemeral.is_empty();
    // `full_state` asks for every room, news or not.
    let quiet = quiet && !req.full_state;
    if !fresh && quiet && s.rooms.newest_count_at_most(room)? <= after {
        return Ok(None);
    }
    let filter = &req.filter;
    let visible = s.rooms.history_view(room, &who.user_id)?;
    let timeline =
        s.rooms
            .timeline_between(room, from, upto, filter.timeline_limit, |pdu, meta| {
                Ok(filter.timeline_allows(pdu) && visible(pdu, meta)?)
            })?;
    if !fresh && timeline.events.is_empty() && quiet {
        return Ok(None);
    }
    let parts = RoomParts {
        timeline,
        ephemeral,
        account_data,
    };
    joined_room_section(s, who, room, (after, upto), fresh, parts, req).map(Some)
}

/// What a joined room's section is made of, read by the caller.
struct RoomParts {
    timeline: TimelineSlice,
    ephemeral: Vec<Value>,
    account_data: Vec<Value>,
}

/// A joined room's section around its timeline: state, summary and counts.
fn joined_room_section(
    s: &Services,
    who: &Identity,
    room: &ruma::RoomId,
    (after, upto): (u64, u64),
    fresh: bool,
    parts: RoomParts,
    req: &SyncRequest,
) -> Result<JoinedRoom> {
    let user = &who.user_id;
    let from = if fresh { 0 } else { after };
    let RoomParts {
        timeline,
        ephemeral,
        account_data,
    } = parts;
    let filter = &req.filter;
    let whole = fresh || req.full_state;
    let (state, state_after) = if req.use_state_after {
        let events = state_after_section(s, room, after, upto, whole, &timeline, filter)?;
        (
            None,
            Some(Events {
                events: events_json(s, &events, filter)?,
            }),
        )
    } else {
        let events = state_section(s, room, after, upto, whole, &timeline, filter)?;
        (
            Some(Events {
                events: events_json(s, &events, filter)?,
            }),
            None,
        )
    };
    let members_changed = timeline
        .events
        .iter()
        .any(|(pdu, _)| pdu.kind().to_string() == "m.room.member");
    let summary = if fresh || members_changed {
        Some(s.rooms.sync_summary(room, user)?)
    } else {
        None
    };
    let mut counts = s
        .notifications
        .counts(user, s.rooms.require_meta(room)?.short)?;
    // Without the opt-in, threaded notifications count in the room's totals.
    if !req.filter.unread_thread_notifications {
        for (n, h) in std::mem::take(&mut counts.threads).into_values() {
            counts.notifications += n;
            counts.highlights += h;
        }
    }
    let threads = (!counts.threads.is_empty()).then(|| {
        let per_root: serde_json::Map<String, Value> = counts
            .threads
            .iter()
            .map(|(root, (n, h))| {
                (
                    root.clone(),
                    json!({ "notification_count": n, "highlight_count": h }),
                )
            })
            .collect();
        Value::Object(per_root)
    });
    Ok(JoinedRoom {
        timeline: timeline_json(s, who, &timeline, (from, upto), filter)?,
        state,
        state_after,
        ephemeral: Events { events: ephemeral },
        account_data: Events {
            events: account_data,
        },
        summary,
        unread_notifications: json!({ "notification_count": counts.notifications, "highlight_count": counts.highlights }),
        unread_thread_notifications: threads,
    })
}

/// Presence of users sharing a room with `user` (and their own) that changed in
/// (after, upto].
fn presence_events(
    s: &Services,
    user: &ruma::UserId,
    after: u64,
    upto: u64,
    filter: &SyncFilter,
) -> Result<Vec<Value>> {
    if !s.presence.enabled() {
        return Ok(Vec::new());
    }
    let changed = s.presence.changed_between(after, upto)?;
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let mine: BTreeSet<OwnedRoomId> = s.rooms.joined_rooms(user)?.into_iter().collect();
    let mut events = Vec::new();
    for other in changed.into_iter().filter(|u| filter.presence_allows(u)) {
        let shares_a_room = other == *user
            || s.rooms
                .joined_rooms(&other)?
                .iter()
                .any(|r| mine.contains(r));
        if shares_a_room && let Some(content) = s.presence.content(&other)? {
            events.push(json!({ "type": "m.presence", "sender": other, "content": content }));
        }
    }
    Ok(events)
}

/// Typing and receipts that changed in (after, upto].
fn ephemeral_events(
    s: &Services,
    who: &Identity,
    room: &ruma::RoomId,
    after: u64,
    upto: u64,
) -> Result<Vec<Value>> {
    let short_room = s.rooms.require_meta(room)?.short;
    let mut events = Vec::new();
    if let Some(users) = s.typing.typing_since(short_room, after) {
        events.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
    }
    if let Some(receipts) = s
        .receipts
        .receipt_event_since(short_room, &who.user_id, after, upto)?
    {
        events.push(receipts);
    }
    Ok(events)
}

/// MSC4222's `state_after`: the state at the end of the timeline; for an
/// incremental sync, what changed since the token (timeline events included).
fn state_after_section(
    s: &Services,
    room: &ruma::RoomId,
    after: u64,
    upto: u64,
    whole: bool,
    timeline: &TimelineSlice,
    filter: &SyncFilter,
) -> Result<Vec<StoredEvent>> {
    let at_end = s.rooms.state_at_count(room, upto)?;
    let events = if whole {
        s.rooms.state_events_of(&at_end)?
    } else {
        s.rooms
            .state_delta(&*s.rooms.state_at_count(room, after)?, &at_end)?
    };
    let senders: BTreeSet<String> = timeline
        .events
        .iter()
        .map(|(pdu, _)| pdu.sender().to_string())
        .collect();
    Ok(events
        .into_iter()
        .filter(|(pdu, _)| filter.state_allows(pdu))
        .filter(|(pdu, _)| {
            !(whole && filter.lazy_load_members)
                || pdu.kind().to_string() != "m.room.member"
                || pdu.state_key().is_some_and(|k| senders.contains(k))
        })
        .collect())
}

/// The state section: the state at the start of the timeline, minus what the
/// device already has (for an incremental sync), filtered.
fn state_section(
    s: &Services,
    room: &ruma::RoomId,
    after: u64,
    upto: u64,
    whole: bool,
    timeline: &TimelineSlice,
    filter: &SyncFilter,
) -> Result<Vec<StoredEvent>> {
    if !whole && !timeline.limited && !filter.lazy_load_members {
        // The timeline carries every state change since the token.
        return Ok(Vec::new());
    }
    let at_timeline_start = match timeline.events.first() {
        Some((_, meta)) => s.rooms.state_before(meta)?,
        None => s.rooms.state_at_count(room, upto)?,
    };
    let events = if whole {
        s.rooms.state_events_of(&at_timeline_start)?
    } else if timeline.limited {
        // Changes between the token and the start of the timeline were skipped.
        let at_token = s.rooms.state_at_count(room, after)?;
        s.rooms.state_delta(&at_token, &at_timeline_start)?
    } else {
        Vec::new()
    };
    let timeline_ids: BTreeSet<_> = timeline
        .events
        .iter()
        .map(|(pdu, _)| pdu.event_id.clone())
        .collect();
    let senders: BTreeSet<String> = timeline
        .events
        .iter()
        .map(|(pdu, _)| pdu.sender().to_string())
        .collect();
    let mut kept: Vec<StoredEvent> = events
        .into_iter()
        .filter(|(pdu, _)| !timeline_ids.contains(&pdu.event_id) && filter.state_allows(pdu))
        .filter(|(pdu, _)| {
            // Lazy loading: member events only for the timeline's senders.
            !filter.lazy_load_members
                || pdu.kind().to_string() != "m.room.member"
                || pdu.state_key().is_some_and(|k| senders.contains(k))
        })
        .collect();
    if filter.lazy_load_members {
        // Senders whose member event is not in the state diff: the client may
        // never have loaded it (Synapse sends them too).
        let have: BTreeSet<String> = kept
            .iter()
            .filter(|(pdu, _)| pdu.kind().to_string() == "m.room.member")
            .filter_map(|(pdu, _)| pdu.state_key().map(str::to_owned))
            .collect();
        let missing: Vec<String> = senders.into_iter().filter(|u| !have.contains(u)).collect();
        kept.extend(
            s.rooms
                .member_events_of(&at_timeline_start, missing)?
                .into_iter()
                .filter(|(pdu, _)| !timeline_ids.contains(&pdu.event_id)),
        );
    }
    Ok(kept)
}

fn timeline_json(
    s: &Services,
    who: &Identity,
    timeline: &TimelineSlice,
    (from, upto): (u64, u64),
    filter: &SyncFilter,
) -> Result<Timeline> {
    let viewer = Some((who.user_id.as_ref(), who.device_id.as_str()));
    let mut events = Vec::with_capacity(timeline.events.len());
    for (pdu, meta) in &timeline.events {
        events.push(filter.project(s.rooms.client_event_json(pdu, meta, viewer)?)?);
    }
    // With no events, paginating back starts after the range when events
    // were left out (`limited`, e.g. a limit of 0), else after its start.
    let empty_start = if timeline.limited { upto } else { from };
    let prev_batch = timeline
        .events
        .first()
        .map_or(empty_start.saturating_add(1), |(_, meta)| meta.count);
    Ok(Timeline {
        events,
        limited: timeline.limited,
        prev_batch: crate::rooms::token(prev_batch),
    })
}

fn events_json(
    s: &Services,
    events: &[StoredEvent],
    filter: &SyncFilter,
) -> Result<Vec<Box<RawValue>>> {
    events
        .iter()
        .map(|(pdu, meta)| filter.project(s.rooms.client_event_json(pdu, meta, None)?))
        .collect()
}

/// A room the user left (or was removed from) since the token: its timeline
/// up to the leave.
fn left_room(
    s: &Services,
    who: &Identity,
    room: &ruma::RoomId,
    after: u64,
    left_at: u64,
    req: &SyncRequest,
) -> Result<LeftRoom> {
    let user = &who.user_id;
    let filter = &req.filter;
    let visible = s.rooms.history_view(room, user)?;
    let timeline =
        s.rooms
            .timeline_between(room, after, left_at, filter.timeline_limit, |pdu, meta| {
                Ok(filter.timeline_allows(pdu) && visible(pdu, meta)?)
            })?;
    let state = state_section(
        s,
        room,
        after,
        left_at,
        req.full_state || after == 0,
        &timeline,
        filter,
    )?;
    Ok(LeftRoom {
        timeline: timeline_json(s, who, &timeline, (after, left_at), filter)?,
        state: Events {
            events: events_json(s, &state, filter)?,
        },
        account_data: Events { events: Vec::new() },
    })
}
