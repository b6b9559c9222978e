//! Relations between events: edits (`m.replace`), threads (`m.thread`),
//! annotations and references. Indexed when an event is written; served by
//! `/relations`, `/threads` and bundled into `unsigned.m.relations`.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{Pdu, Rooms};
use crate::{
    error::{Error, Result},
    storage::{
        Batch, Key, PARENTCOUNT_RELATION, Raw, SHORTROOMIDLATEST_THREADROOT,
        SHORTROOMIDROOT_LATEST, prefix,
    },
};

/// (rel_type, parent event id) of an event's `m.relates_to`, if it has one.
pub fn relation_of(pdu: &Pdu) -> Option<(String, OwnedEventId)> {
    let content = pdu.content_value();
    let relates = content.get("m.relates_to")?;
    let rel_type = relates.get("rel_type")?.as_str()?.to_owned();
    let parent = OwnedEventId::try_from(relates.get("event_id")?.as_str()?).ok()?;
    Some((rel_type, parent))
}

/// The thread an event belongs to (its `m.thread` root), if any.
pub fn thread_root_of(pdu: &Pdu) -> Option<OwnedEventId> {
    relation_of(pdu).and_then(|(rel_type, root)| (rel_type == "m.thread").then_some(root))
}

/// One child in the relations index.
struct Child {
    short: u64,
    count: u64,
    rel_type: String,
    kind: String,
}

/// How deep `recurse=true` follows relations of relations.
const MAX_RECURSION: usize = 3;

impl Rooms {
    /// Indexes a new event's relation (and its thread) in the event's batch.
    /// Returns the parent's metadata, newly flagged, for the cache.
    pub(super) fn stage_relation(
        &self,
        batch: &mut Batch,
        short_room: u64,
        pdu: &Pdu,
        short: u64,
        count: u64,
    ) -> Result<Option<(u64, super::EventMeta)>> {
        let Some((rel_type, parent)) = relation_of(pdu) else {
            return Ok(None);
        };
        // Relations never cross rooms: a parent known to be elsewhere is ignored
        // (one not known yet may arrive later over federation; reads re-check).
        let parent_short = self.short_event_id(&parent)?;
        if let Some(parent_short) = parent_short
            && self
                .pdu(parent_short)?
                .is_some_and(|parent| parent.room_id != pdu.room_id)
        {
            return Ok(None);
        }
        let value = serde_json::to_vec(&json!([short, rel_type, pdu.kind().to_string()]))?;
        batch.put(
            PARENTCOUNT_RELATION,
            &(parent.to_string(), count),
            &Raw(value),
        );
        if rel_type == "m.thread" {
            let key = (short_room, parent.to_string());
            if let Some(previous) = self.db.get(SHORTROOMIDROOT_LATEST, &key)? {
                batch.delete(SHORTROOMIDLATEST_THREADROOT, &(short_room, previous));
            }
            batch.put(SHORTROOMIDROOT_LATEST, &key, &count);
            batch.put(
                SHORTROOMIDLATEST_THREADROOT,
                &(short_room, count),
                &Raw(parent.as_bytes().to_vec()),
            );
        }
        if let Some(parent_short) = parent_short
            && let Some(mut parent_meta) = self.event_meta(parent_short)?
            && !parent_meta.has_relations
        {
            parent_meta.has_relations = true;
            batch.put(
                crate::storage::SHORTEVENTID_META,
                &parent_short,
                &parent_meta,
            );
            return Ok(Some((parent_short, parent_meta)));
        }
        Ok(None)
    }

    fn children(&self, parent: &EventId) -> Result<Vec<Child>> {
        let rows = self
            .db
            .scan_prefix(PARENTCOUNT_RELATION, &prefix(&(parent.to_string(),)))?;
        let mut children = Vec::with_capacity(rows.len());
        for ((_, count), Raw(value)) in rows {
            let (short, rel_type, kind): (u64, String, String) = serde_json::from_slice(&value)?;
            children.push(Child {
                short,
                count,
                rel_type,
                kind,
            });
        }
        Ok(children)
    }

    /// A child still related to its parent (a redaction strips the relation),
    /// in the parent's room.
    fn live_child(&self, child: &Child, room: &RoomId) -> Result<Option<Arc<Pdu>>> {
        Ok(self
            .pdu(child.short)?
            .filter(|pdu| pdu.room_id == room && relation_of(pdu).is_some()))
    }

    /// The latest edit of an event by its sender, if any.
    pub fn latest_edit(&self, pdu: &Pdu, meta: &super::EventMeta) -> Result<Option<Arc<Pdu>>> {
        if !meta.has_relations {
            return Ok(None);
        }
        let children = self.children(&pdu.event_id)?;
        Ok(self.latest_edit_of(pdu, &children).map(|(edit, _)| edit))
    }

    fn latest_edit_of(&self, pdu: &Pdu, children: &[Child]) -> Option<(Arc<Pdu>, u64)> {
        children
            .iter()
            .rev()
            .filter(|c| c.rel_type == "m.replace" && c.kind == pdu.kind().to_string())
            .find_map(|c| {
                let edit = self.live_child(c, &pdu.room_id).ok().flatten()?;
                (edit.sender() == pdu.sender()).then_some((edit, c.short))
            })
    }

    /// `unsigned.m.relations` for an event: the latest edit by its sender, the
    /// thread summary, references.
    pub(super) fn bundled_relations(
        &self,
        pdu: &Pdu,
        meta: &super::EventMeta,
        viewer: Option<&UserId>,
    ) -> Result<Option<Value>> {
        if !meta.has_relations {
            return Ok(None);
        }
        let children = self.children(&pdu.event_id)?;
        if children.is_empty() {
            return Ok(None);
        }
        let mut bundle = Map::new();
        let is_edit = relation_of(pdu).is_some_and(|(t, _)| t == "m.replace");
        if pdu.state_key().is_none()
            && !is_edit
            && let Some((edit, short)) = self.latest_edit_of(pdu, &children)
            && let Some(meta) = self.event_meta(short)?
        {
            bundle.insert("m.replace".into(), self.client_event_plain(&edit, &meta)?);
        }
        let thread: Vec<&Child> = children
            .iter()
            .filter(|c| c.rel_type == "m.thread")
            .collect();
        let mut live_thread = Vec::new();
        for child in &thread {
            if let Some(event) = self.live_child(child, &pdu.room_id)? {
                live_thread.push((event, child.short));
            }
        }
        if let Some((latest, short)) = live_thread.last()
            && let Some(meta) = self.event_meta(*short)?
        {
            let participated = viewer.is_some_and(|v| {
                pdu.sender() == v || live_thread.iter().any(|(e, _)| e.sender() == v)
            });
            bundle.insert(
                "m.thread".into(),
                json!({
                    "latest_event": self.client_event_plain(latest, &meta)?,
                    "count": live_thread.len(),
                    "current_user_participated": participated,
                }),
            );
        }
        let mut references = Vec::new();
        for child in children.iter().filter(|c| c.rel_type == "m.reference") {
            if let Some(event) = self.live_child(child, &pdu.room_id)? {
                references.push(json!({ "event_id": event.event_id }));
            }
        }
        if !references.is_empty() {
            bundle.insert("m.reference".into(), json!({ "chunk": references }));
        }
        Ok((!bundle.is_empty()).then_some(Value::Object(bundle)))
    }

    /// `/relations`: children of an event, by count, filtered and paginated.
    #[allow(clippy::too_many_arguments)]
    pub fn relations_for(
        &self,
        room: &RoomId,
        viewer: (&UserId, &str),
        parent: &EventId,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        backward: bool,
        limit: usize,
        recurse: bool,
    ) -> Result<(Vec<Value>, Option<String>, usize)> {
        // The parent itself must be visible to the caller.
        self.event_for(room, parent, viewer)?;
        let from = from.map(super::parse_token).transpose()?;
        let to = to.map(super::parse_token).transpose()?;
        let limit = limit.clamp(1, 1000);
        let mut all = Vec::new();
        let mut frontier = vec![parent.to_owned()];
        // How many levels below the direct children held events.
        let mut depth = 0;
        for level in 0..=MAX_RECURSION {
            let mut next = Vec::new();
            for id in &frontier {
                for child in self.children(id)? {
                    if let Some(event) = self.pdu(child.short)? {
                        next.push(event.event_id.clone());
                    }
                    all.push(child);
                }
            }
            if next.is_empty() {
                break;
            }
            depth = level;
            if !recurse {
                break;
            }
            frontier = next;
        }
        all.retain(|c| {
            rel_type.is_none_or(|t| t == c.rel_type) && event_type.is_none_or(|t| t == c.kind)
        });
        all.sort_by_key(|c| c.count);
        if backward {
            all.reverse();
        }
        let in_range = |count: u64| match (backward, from, to) {
            (true, Some(f), _) if count >= f => false,
            (false, Some(f), _) if count < f => false,
            (true, _, Some(t)) if count < t => false,
            (false, _, Some(t)) if count >= t => false,
            _ => true,
        };
        let until = self.joined_until(room, viewer.0)?;
        let mut chunk = Vec::new();
        let mut next_batch = None;
        for child in all.into_iter().filter(|c| in_range(c.count)) {
            if chunk.len() >= limit {
                next_batch = Some(super::token(if backward {
                    child.count + 1
                } else {
                    child.count
                }));
                break;
            }
            let (Some(event), Some(meta)) = (
                self.live_child(&child, room)?,
                self.event_meta(child.short)?,
            ) else {
                continue;
            };
            if event.room_id != room || !self.can_see(viewer.0, &event, &meta, until)? {
                continue;
            }
            chunk.push(self.client_event(&event, &meta, Some(viewer))?);
        }
        Ok((chunk, next_batch, depth))
    }

    /// `/threads`: thread roots of a room by latest activity, newest first.
    pub fn threads_for(
        &self,
        room: &RoomId,
        viewer: (&UserId, &str),
        participated_only: bool,
        from: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<String>)> {
        self.ensure_can_read(room, viewer.0)?;
        let meta = self.require_meta(room)?;
        let before = match from {
            Some(token) => super::parse_token(token)?,
            None => u64::MAX,
        };
        let limit = limit.clamp(1, 1000);
        let until = self.joined_until(room, viewer.0)?;
        let mut chunk = Vec::new();
        let mut cursor = before;
        loop {
            let rows = self.db.scan_rev(
                SHORTROOMIDLATEST_THREADROOT,
                &prefix(&(meta.short,)),
                &(meta.short, cursor).encode(),
                limit * 2,
            )?;
            if rows.is_empty() {
                return Ok((chunk, None));
            }
            for ((_, latest), Raw(root)) in rows {
                cursor = latest;
                let root = OwnedEventId::try_from(String::from_utf8_lossy(&root).into_owned())
                    .map_err(|e| Error::internal(format!("bad thread root: {e}")))?;
                let Some(short) = self.short_event_id(&root)? else {
                    continue;
                };
                let (Some(pdu), Some(root_meta)) = (self.pdu(short)?, self.event_meta(short)?)
                else {
                    continue;
                };
                if pdu.room_id != room || !self.can_see(viewer.0, &pdu, &root_meta, until)? {
                    continue;
                }
                let event = self.client_event(&pdu, &root_meta, Some(viewer))?;
                let participated = event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"]
                    == true;
                if participated_only && !participated {
                    continue;
                }
                chunk.push(event);
                if chunk.len() >= limit {
                    return Ok((chunk, Some(super::token(cursor))));
                }
            }
        }
    }
}
