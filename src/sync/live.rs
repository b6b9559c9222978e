//! A live sync subscription (the WebSocket's `sync` op): one response after
//! another, each covering what happened since the previous one.
//!
//! A long-poll must rebuild its whole response from storage each time, since
//! it cannot know what happened between requests. A subscription can: it
//! keeps the watches registered before its previous frame was read, and the
//! ones that fired name the only sections that can have news. The common
//! wake-up, a new message in one room, then reads that room's new events and
//! its unread counts, nothing else.
//!
//! Why no change is lost: a frame covers counts up to `published_count`, the
//! count up to which every write has woken its watchers. Watches checked
//! after reading it have been flagged by every write it covers; watches
//! registered before reading it are woken by every write above it. Fired
//! watches are renewed before the read, the others were registered before an
//! earlier one and have not fired.

use std::{collections::BTreeMap, sync::Arc};

use ruma::RoomId;

use super::{
    DeviceLists, Events, RoomParts, Rooms, SyncFilter, SyncRequest, SyncResponse, build,
    ephemeral_events, joined_room_section, presence_events, token,
    watches::{Changed, RoomChanged, Watches},
};
use crate::{
    Services,
    auth::Identity,
    error::Result,
    rooms::{TimelineSlice, VisibilityMemo},
};

pub struct Live {
    s: Arc<Services>,
    who: Identity,
    req: SyncRequest,
    /// What the last frame covered (`None` before the initial one).
    since: Option<u64>,
    /// Registered before the last frame was read; `None` forces a full build.
    watches: Option<Watches>,
    /// The device's key counts as of the last read, sent in every frame.
    one_time_key_counts: BTreeMap<String, u64>,
    unused_fallback_key_types: Vec<String>,
    /// The device's visibility lookups: in a room without state changes,
    /// every new message is checked against the same snapshot.
    visibility: VisibilityMemo,
}

impl Live {
    /// A subscription from `since` (a `next_batch` token), or from nothing:
    /// then the first frame is an initial sync.
    pub fn new(
        s: Arc<Services>,
        who: Identity,
        since: Option<&str>,
        filter: SyncFilter,
    ) -> Result<Self> {
        let since = since.map(|t| token::decode(&who.user_id, t)).transpose()?;
        let req = SyncRequest {
            set_presence: "online".into(),
            filter,
            ..SyncRequest::default()
        };
        Ok(Self {
            s,
            who,
            req,
            since,
            watches: None,
            one_time_key_counts: BTreeMap::new(),
            unused_fallback_key_types: Vec::new(),
            visibility: VisibilityMemo::default(),
        })
    }

    /// Resolves when the next frame may have something (at once before the
    /// first). Cancel-safe.
    pub async fn wait(&mut self) {
        if let Some(watches) = &mut self.watches {
            watches.changed().await;
        }
    }

    /// The next frame: everything since the last one, or `None` when nothing
    /// of it concerns the device. The initial frame is always sent.
    pub fn next_frame(&mut self) -> Result<Option<SyncResponse>> {
        let Some(mut watches) = self.watches.take() else {
            return self.full_frame();
        };
        let mut changed = Changed::default();
        watches.renew_fired(&self.s, &self.who, &mut changed);
        if changed.needs_full_build() {
            return self.full_frame();
        }
        let upto = self.s.db.published_count();
        // Unrenewed watches that fired meanwhile: their news may be in range
        // (they stay fired, so the next frame looks again).
        watches.mark_fired(&mut changed);
        if changed.needs_full_build() {
            return self.full_frame();
        }
        let Some(response) = self.scoped(&changed, upto)? else {
            return self.full_frame();
        };
        self.watches = Some(watches);
        self.since = Some(upto);
        Ok((!response.is_empty()).then_some(response))
    }

    /// A frame read whole from storage, with every watch registered anew.
    fn full_frame(&mut self) -> Result<Option<SyncResponse>> {
        let watches = Watches::register(&self.s, &self.who, true)?;
        let upto = self.s.db.published_count();
        let response = build(&self.s, &self.who, self.since, upto, &self.req)?;
        self.one_time_key_counts = response.device_one_time_keys_count.clone();
        self.unused_fallback_key_types = response.device_unused_fallback_key_types.clone();
        let initial = self.since.is_none();
        self.watches = Some(watches);
        self.since = Some(upto);
        Ok((initial || !response.is_empty()).then_some(response))
    }

    /// A frame of only the `changed` parts, in (since, upto]; `None` when the
    /// news needs a full build after all (a state event, a gap).
    fn scoped(&mut self, changed: &Changed, upto: u64) -> Result<Option<SyncResponse>> {
        let after = self.since.unwrap_or(0);
        let mut rooms = Rooms::default();
        for (room, what) in &changed.rooms {
            if !self.req.filter.room_allowed(room) {
                continue;
            }
            match self.room(room, *what, after, upto)? {
                Scoped::Section(section) => {
                    rooms.join.insert(room.clone(), *section);
                }
                Scoped::Nothing => {}
                Scoped::NeedsFullBuild => return Ok(None),
            }
        }
        let (s, who) = (&*self.s, &self.who);
        let user = &who.user_id;
        let device_lists = if changed.key_changes {
            let changes = crate::e2ee::device_list_changes(s, user, after, upto)?;
            DeviceLists {
                changed: changes.changed.into_iter().collect(),
                left: changes.left.into_iter().collect(),
            }
        } else {
            DeviceLists::default()
        };
        let presence = if changed.presence {
            presence_events(s, user, after, upto, &self.req.filter)?
        } else {
            Vec::new()
        };
        let to_device = if changed.to_device {
            s.to_device.pending(user, &who.device_id, after, upto)?
        } else {
            Vec::new()
        };
        if changed.own_keys {
            self.one_time_key_counts = s.e2ee.one_time_key_counts(user, &who.device_id)?;
            self.unused_fallback_key_types =
                s.e2ee.unused_fallback_key_types(user, &who.device_id)?;
        }
        Ok(Some(SyncResponse {
            next_batch: token::encode(user, upto),
            rooms,
            account_data: Events { events: Vec::new() },
            presence: Events { events: presence },
            to_device: Events { events: to_device },
            device_lists,
            device_one_time_keys_count: self.one_time_key_counts.clone(),
            device_unused_fallback_key_types: self.unused_fallback_key_types.clone(),
        }))
    }

    /// A joined room's news. The user's memberships have not changed since
    /// the last frame, so the room is neither new nor left.
    fn room(&mut self, room: &RoomId, what: RoomChanged, after: u64, upto: u64) -> Result<Scoped> {
        let (s, who, filter) = (&*self.s, &self.who, &self.req.filter);
        let ephemeral = if what.ephemeral {
            ephemeral_events(s, who, room, after, upto)?
        } else {
            Vec::new()
        };
        let timeline = if what.timeline {
            let mut visible = s
                .rooms
                .joined_history_view(&who.user_id, &mut self.visibility);
            let mut state_changed = false;
            let timeline = s.rooms.timeline_between(
                room,
                after,
                upto,
                filter.timeline_limit,
                |pdu, meta| {
                    // State changes bring state sections, summaries and
                    // device-list news: the full build's business.
                    state_changed |= pdu.state_key().is_some();
                    Ok(filter.timeline_allows(pdu) && visible(pdu, meta)?)
                },
            )?;
            if state_changed || timeline.limited {
                return Ok(Scoped::NeedsFullBuild);
            }
            timeline
        } else {
            TimelineSlice::default()
        };
        if timeline.events.is_empty() && ephemeral.is_empty() {
            return Ok(Scoped::Nothing);
        }
        let parts = RoomParts {
            timeline,
            ephemeral,
            account_data: Vec::new(),
        };
        let section = joined_room_section(s, who, room, (after, upto), false, parts, &self.req)?;
        Ok(Scoped::Section(Box::new(section)))
    }
}

enum Scoped {
    Section(Box<super::JoinedRoom>),
    Nothing,
    NeedsFullBuild,
}
