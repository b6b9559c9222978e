//! The write path: build a PDU for a local event, sign it, authorize it against
//! the room's current state with the spec's auth rules, and write it with all
//! its indexes in one batch.

use std::sync::Arc;

use http::StatusCode;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId,
    api::error::ErrorKind,
    canonical_json::{CanonicalJsonObject, CanonicalJsonValue, redact_in_place},
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    signatures::{hash_and_sign_event, reference_hash},
    state_res::{
        auth_types_for_event, check_pdu_format, check_state_dependent_auth_rules,
        check_state_independent_auth_rules,
    },
};
use serde_json::Value;

use super::{
    EventMeta, MembershipRecord, Pdu, RoomMeta, Rooms,
    resolve::{CurrentAfter, StateBefore},
    state::StateMap,
};
use crate::{
    error::{Error, Result},
    storage::{
        Batch, EVENTID_SHORTEVENTID, ROOMID_META, Raw, SHORTEVENTID_EVENTID, SHORTEVENTID_META,
        SHORTEVENTID_PDU, SHORTROOMID_ROOMID, SHORTROOMIDCOUNT_SHORTEVENTID,
        SHORTROOMIDTSCOUNT_SHORTEVENTID, USERIDDEVICETXN_EVENTID, USERIDROOMID_MEMBERSHIP,
    },
    util::now_ms,
};

/// A local event to append.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Value,
    /// For redactions: the event redacted.
    pub redacts: Option<OwnedEventId>,
    /// The sending device and transaction id, for idempotent sends.
    pub txn: Option<(String, String)>,
}

/// A transaction id is unique per device and request path, as clients expect:
/// the same id in another room or for another event type is another send.
fn txn_scope(room: &RoomId, kind: &TimelineEventType, txn: &str) -> String {
    format!("{room}\u{1f}{kind}\u{1f}{txn}")
}

impl EventDraft {
    pub fn new(kind: impl Into<TimelineEventType>, content: Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: None,
            content,
            redacts: None,
            txn: None,
        }
    }

    pub fn state(
        kind: impl Into<TimelineEventType>,
        state_key: impl Into<String>,
        content: Value,
    ) -> Self {
        Self {
            state_key: Some(state_key.into()),
            ..Self::new(kind, content)
        }
    }
}

pub(super) fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .ok_or_else(|| Error::internal(format!("room version {version} has no rules")))
}

fn forbidden(reason: impl std::fmt::Display) -> Error {
    Error::new(
        StatusCode::FORBIDDEN,
        ErrorKind::Forbidden,
        format!("The event is not allowed: {reason}"),
    )
}

fn to_canonical(value: Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value)
        .map_err(|e| Error::bad_json(format!("Event content is not canonical JSON: {e}")))
}

impl Rooms {
    /// Appends a local event to a room: the one way events enter a room's timeline.
    pub async fn append(
        &self,
        room: &RoomId,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<OwnedEventId> {
        let handle = self.handle(room);
        let _guard = handle.lock.lock().await;
        // A retried send returns the event it created the first time.
        if let Some((device, txn)) = &draft.txn
            && let Some(existing) =
                self.event_for_txn(sender, device, &txn_scope(room, &draft.kind, txn))?
        {
            return Ok(existing);
        }
        let meta = self.require_meta(room)?;
        let (pdu, obj) = self.build_and_authorize(room, &meta, sender, &draft)?;
        // Room versions from 3 on leave redaction rights to servers: checked here
        // for whatever path (`/redact` or `/send`) built the event.
        if let Some(target) = pdu.redacts_id()
            && *pdu.kind() == TimelineEventType::RoomRedaction
        {
            self.authorize_redaction(room, sender, target)?;
        }
        let event_id = pdu.event_id.clone();
        let leaves = vec![event_id.clone()];
        let notify = self.push.evaluate(self, room, &pdu).await?;
        let (before, current) = (StateBefore::Current, CurrentAfter::ThisEvent);
        self.write(
            room, meta, pdu, obj, &draft, before, leaves, current, &notify,
        )?;
        Ok(event_id)
    }

    fn event_for_txn(
        &self,
        sender: &UserId,
        device: &str,
        txn: &str,
    ) -> Result<Option<OwnedEventId>> {
        let key = (sender.to_owned(), device.into(), txn.to_owned());
        match self.db.get(USERIDDEVICETXN_EVENTID, &key)? {
            Some(Raw(id)) => {
                Ok(OwnedEventId::try_from(String::from_utf8_lossy(&id).into_owned()).ok())
            }
            None => Ok(None),
        }
    }

    /// The state event for (type, key) in `state`.
    pub(super) fn state_event(
        &self,
        state: &StateMap,
        kind: &str,
        key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let Some(short_key) = self.state.short_key(kind, key)? else {
            return Ok(None);
        };
        match state.get(&short_key) {
            Some(&short_event) => self.pdu(short_event),
            None => Ok(None),
        }
    }

    /// Builds the signed PDU and checks it against the auth rules and the
    /// room's current state.
    fn build_and_authorize(
        &self,
        room: &RoomId,
        meta: &RoomMeta,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<(Arc<Pdu>, CanonicalJsonObject)> {
        let rules = rules_of(&meta.version)?;
        let state = self.state.load(meta.current_state)?;
        let content_raw = serde_json::value::to_raw_value(&draft.content)?;

        let auth_types = auth_types_for_event(
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(forbidden)?;
        let mut auth_events = Vec::new();
        for (kind, key) in &auth_types {
            if let Some(pdu) = self.state_event(&state, &kind.to_string(), key)?
                && !auth_events.contains(&pdu.event_id)
            {
                auth_events.push(pdu.event_id.clone());
            }
        }
        let mut depth = 0;
        for prev in &meta.leaves {
            if let Some(pdu) = self.pdu_by_id(prev)? {
                depth = depth.max(pdu.depth());
            }
        }

        let mut obj = CanonicalJsonObject::new();
        obj.insert("room_id".into(), room.as_str().into());
        obj.insert("sender".into(), sender.as_str().into());
        obj.insert(
            "origin_server_ts".into(),
            to_canonical(serde_json::json!(MilliSecondsSinceUnixEpoch::now()))?,
        );
        obj.insert("type".into(), draft.kind.to_string().into());
        obj.insert("content".into(), to_canonical(draft.content.clone())?);
        if let Some(key) = &draft.state_key {
            obj.insert("state_key".into(), key.clone().into());
        }
        let ids = |ids: &[OwnedEventId]| {
            CanonicalJsonValue::Array(ids.iter().map(|e| e.as_str().into()).collect())
        };
        obj.insert("prev_events".into(), ids(&meta.leaves));
        obj.insert("auth_events".into(), ids(&auth_events));
        obj.insert(
            "depth".into(),
            to_canonical(serde_json::json!((depth + 1).min(i64::MAX as u64 / 2)))?,
        );
        if let Some(redacts) = &draft.redacts
            && !rules.redaction.content_field_redacts
        {
            obj.insert("redacts".into(), redacts.as_str().into());
        }
        self.sign_and_check(room, &rules, obj, &state)
    }

    /// Signs `obj`, derives its event id and runs the auth rules against `state`.
    pub(super) fn sign_and_check(
        &self,
        room: &RoomId,
        rules: &RoomVersionRules,
        mut obj: CanonicalJsonObject,
        state: &StateMap,
    ) -> Result<(Arc<Pdu>, CanonicalJsonObject)> {
        let event_id = self.sign(rules, &mut obj)?;
        let pdu = self.check(room, rules, event_id, &obj, state)?;
        Ok((pdu, obj))
    }

    /// Adds the content hash and our signature; returns the event id.
    pub(super) fn sign(
        &self,
        rules: &RoomVersionRules,
        obj: &mut CanonicalJsonObject,
    ) -> Result<OwnedEventId> {
        hash_and_sign_event(
            self.server_name.as_str(),
            self.key.pair(),
            obj,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(format!("Cannot sign the event: {e}")))?;
        let hash = reference_hash(obj, rules)
            .map_err(|e| Error::bad_json(format!("Cannot hash the event: {e}")))?;
        EventId::new_v2_or_v3(&hash).map_err(|e| Error::internal(format!("event id: {e}")))
    }

    /// Runs the format check and the auth rules (against `state`, the state before the event).
    pub(super) fn check(
        &self,
        room: &RoomId,
        rules: &RoomVersionRules,
        event_id: OwnedEventId,
        obj: &CanonicalJsonObject,
        state: &StateMap,
    ) -> Result<Arc<Pdu>> {
        check_pdu_format(obj, &rules.event_format)
            .map_err(|e| Error::too_large(format!("Invalid event: {e}")))?;
        let json = serde_json::value::to_raw_value(obj)?;
        let pdu = Arc::new(Pdu::from_json(event_id, room.to_owned(), json)?);
        check_state_independent_auth_rules(&rules.authorization, &*pdu, |id| {
            self.pdu_by_id(id).ok().flatten()
        })
        .map_err(forbidden)?;
        check_state_dependent_auth_rules(
            &rules.authorization,
            &*pdu,
            |kind: &StateEventType, key| {
                self.state_event(state, &kind.to_string(), key)
                    .ok()
                    .flatten()
            },
        )
        .map_err(forbidden)?;
        Ok(pdu)
    }

    /// Writes an authorized event and every index it touches in one batch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &self,
        room: &RoomId,
        mut meta: RoomMeta,
        pdu: Arc<Pdu>,
        obj: CanonicalJsonObject,
        draft: &EventDraft,
        state_before: StateBefore,
        leaves: Vec<OwnedEventId>,
        current: CurrentAfter,
        notify: &[crate::push::Notify],
    ) -> Result<()> {
        let mut batch = self.db.batch();
        if meta.short == 0 {
            // The create event of a new room: the room gets its short id now.
            meta.short = batch.next_count()?;
            batch.put(
                SHORTROOMID_ROOMID,
                &meta.short,
                &Raw(room.as_bytes().to_vec()),
            );
        }
        let count = batch.next_count()?;
        let short = count;
        let before_hash = match state_before {
            StateBefore::Current => meta.current_state,
            StateBefore::Map(map) => self.state.stage_map(&mut batch, meta.current_state, &map)?,
        };
        let before = self.state.load(before_hash)?;
        let mut event_meta = EventMeta {
            short_room: meta.short,
            count,
            state_before: before_hash,
            replaces_state: None,
            redacted_by: None,
            txn: draft.txn.clone(),
            has_relations: false,
        };
        let mut cache_metas = Vec::new();
        let mut cache_pdus = Vec::new();
        let mut after_hash = before_hash;
        let mut state_key_short = None;
        if let Some(key) = pdu.state_key() {
            let short_key = self
                .state
                .short_key_or_create(&pdu.kind().to_string(), key)?;
            event_meta.replaces_state = before.get(&short_key).copied();
            after_hash = self.state.stage(
                &mut batch,
                before_hash,
                vec![(short_key, short)],
                Vec::new(),
            )?;
            state_key_short = Some(short_key);
        }
        meta.current_state = match current {
            CurrentAfter::ThisEvent => after_hash,
            CurrentAfter::Resolved(ids) => {
                let resolved = self.short_map_of(&ids, Some((&pdu.event_id, short)))?;
                self.state.stage_map(&mut batch, after_hash, &resolved)?
            }
        };
        // Indexes that follow the room's state only count this event if it won.
        let in_current_state = match state_key_short {
            Some(key) => self.state.load(meta.current_state)?.get(&key) == Some(&short),
            None => false,
        };
        meta.leaves = leaves;

        batch.put(EVENTID_SHORTEVENTID, &pdu.event_id, &short);
        batch.put(
            SHORTEVENTID_EVENTID,
            &short,
            &Raw(pdu.event_id.as_bytes().to_vec()),
        );
        batch.put(SHORTEVENTID_PDU, &short, &Raw(serde_json::to_vec(&obj)?));
        batch.put(SHORTEVENTID_META, &short, &event_meta);
        batch.put(SHORTROOMIDCOUNT_SHORTEVENTID, &(meta.short, count), &short);
        self.note_newest(meta.short, count);
        batch.put(ROOMID_META, &room.to_owned(), &meta);
        if *pdu.kind() == TimelineEventType::RoomMember
            && in_current_state
            && let Some(target) = pdu.state_key().and_then(|k| UserId::parse(k).ok())
        {
            let key = (target, room.to_owned());
            let membership = pdu.content_str("membership").unwrap_or_default();
            let since = match self.db.get(USERIDROOMID_MEMBERSHIP, &key)? {
                Some(previous) if previous.membership == membership => previous.began(),
                _ => count,
            };
            let record = MembershipRecord {
                membership,
                count,
                event: short,
                forgotten: false,
                since,
            };
            batch.put(USERIDROOMID_MEMBERSHIP, &key, &record);
        }
        if let Some(parent) = self.stage_relation(&mut batch, meta.short, &pdu, short, count)? {
            cache_metas.push(parent);
        }
        self.stage_search_tokens(&mut batch, meta.short, &pdu, short, count);
        self.push
            .stage(&mut batch, room, meta.short, count, &pdu.event_id, notify)?;
        batch.put(
            SHORTROOMIDTSCOUNT_SHORTEVENTID,
            &(meta.short, pdu.origin_server_ts(), count),
            &short,
        );
        if let Some((device, txn)) = &draft.txn {
            let scoped = txn_scope(room, &draft.kind, txn);
            let key = (pdu.sender().to_owned(), device.as_str().into(), scoped);
            batch.put(
                USERIDDEVICETXN_EVENTID,
                &key,
                &Raw(pdu.event_id.as_bytes().to_vec()),
            );
        }
        if *pdu.kind() == TimelineEventType::RoomRedaction
            && let Some(target) = pdu.redacts_id()
            && let Some((target_short, target_meta, redacted)) =
                self.stage_redaction(&mut batch, &meta.version, target, &pdu)?
        {
            cache_metas.push((target_short, target_meta));
            cache_pdus.push((target_short, redacted));
        }
        batch.commit()?;
        self.timelines.appended(meta.short, count, short);
        *self.handle(room).meta.lock() = Some(meta);
        cache_metas.push((short, event_meta));
        cache_pdus.push((short, pdu));
        self.cache_committed(cache_metas, cache_pdus);
        Ok(())
    }

    /// Strips a redacted event's content per its room version, in storage, so
    /// every later read serves the redacted form. Returns what the caches get
    /// once the batch commits.
    fn stage_redaction(
        &self,
        batch: &mut Batch,
        version: &RoomVersionId,
        target: &EventId,
        redaction: &Pdu,
    ) -> Result<Option<(u64, EventMeta, Arc<Pdu>)>> {
        let by = &redaction.event_id;
        let Some(short) = self.short_event_id(target)? else {
            return Ok(None);
        };
        let Some(original) = self.pdu(short)? else {
            return Ok(None);
        };
        if !self.redaction_applies(&original, redaction)? {
            return Ok(None);
        }
        let Some(mut meta) = self.event_meta(short)? else {
            return Ok(None);
        };
        let rules = rules_of(version)?;
        let mut obj: CanonicalJsonObject = serde_json::from_str(original.json.get())?;
        redact_in_place(&mut obj, &rules.redaction, None)
            .map_err(|e| Error::internal(format!("cannot redact {target}: {e}")))?;
        meta.redacted_by = Some(by.to_owned());
        let json = serde_json::value::to_raw_value(&obj)?;
        batch.put(
            SHORTEVENTID_PDU,
            &short,
            &Raw(json.get().as_bytes().to_vec()),
        );
        batch.put(SHORTEVENTID_META, &short, &meta);
        let redacted = Arc::new(Pdu::from_json(
            original.event_id.clone(),
            original.room_id.clone(),
            json,
        )?);
        Ok(Some((short, meta, redacted)))
    }

    /// Whether a redaction (already accepted into the room) strips its target:
    /// only an event of the same room, sent by the redaction's sender or by a
    /// user of the same server, or redacted with the room's redact power. Local
    /// redactions were checked more strictly before they were created.
    fn redaction_applies(&self, original: &Pdu, redaction: &Pdu) -> Result<bool> {
        if original.room_id != redaction.room_id {
            return Ok(false);
        }
        let (by, of) = (redaction.sender(), original.sender());
        Ok(by == of
            || by.server_name() == of.server_name()
            || self
                .power_levels(&redaction.room_id)?
                .user_can_redact_event_of_other(by))
    }

    /// Registers a new room whose create event is `create` (already signed and checked).
    pub(super) fn write_new_room(
        &self,
        room: &OwnedRoomId,
        version: RoomVersionId,
        pdu: Arc<Pdu>,
        obj: CanonicalJsonObject,
    ) -> Result<()> {
        let handle = self.handle(room);
        let in_use = || {
            Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::RoomInUse,
                "That room already exists",
            )
        };
        // Another creation of the same room id holds the lock: also in use.
        let _guard = handle.lock.try_lock().map_err(|_| in_use())?;
        if self.db.contains(ROOMID_META, room)? {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::RoomInUse,
                "That room already exists",
            ));
        }
        let meta = RoomMeta {
            short: 0,
            version,
            current_state: super::state::EMPTY_STATE,
            leaves: Vec::new(),
            created_ts: now_ms(),
        };
        let leaves = vec![pdu.event_id.clone()];
        let draft = EventDraft::new(TimelineEventType::RoomCreate, Value::Null);
        let (before, current) = (StateBefore::Current, CurrentAfter::ThisEvent);
        self.write(room, meta, pdu, obj, &draft, before, leaves, current, &[])
    }
}
