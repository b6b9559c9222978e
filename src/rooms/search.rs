//! Search over message bodies, event context, jumping to a timestamp, and
//! content reports.

use std::collections::HashMap;

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{Pdu, Rooms, read::Direction, token};
use crate::{
    error::{Error, Result},
    storage::{
        Batch, Key, REPORTID_REPORT, Raw, SHORTROOMIDTSCOUNT_SHORTEVENTID,
        TOKENSHORTROOMIDCOUNT_SHORTEVENTID, prefix,
    },
    util::now_ms,
};

/// Lower-cased words of a text, for the index and for queries.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() <= 64)
        .map(str::to_lowercase)
        .collect()
}

/// Indexed fields of searchable events (the spec's `content.body`, `content.name`, `content.topic`).
fn searchable_text(pdu: &Pdu) -> Option<String> {
    let field = match pdu.kind().to_string().as_str() {
        "m.room.message" => "body",
        "m.room.name" => "name",
        "m.room.topic" => "topic",
        _ => return None,
    };
    pdu.content_str(field)
}

/// One search hit.
#[derive(Debug)]
pub struct SearchHit {
    pub rank: f64,
    pub event: Value,
    pub room_id: OwnedRoomId,
    pub count: u64,
}

impl Rooms {
    pub(super) fn stage_search_tokens(
        &self,
        batch: &mut Batch,
        short_room: u64,
        pdu: &Pdu,
        short: u64,
        count: u64,
    ) {
        let Some(text) = searchable_text(pdu) else {
            return;
        };
        let mut tokens = tokenize(&text);
        tokens.sort();
        tokens.dedup();
        for token in tokens.into_iter().take(256) {
            batch.put(
                TOKENSHORTROOMIDCOUNT_SHORTEVENTID,
                &(token, short_room, count),
                &short,
            );
        }
    }

    /// Events in `rooms` whose text contains every word of `query`, visible to
    /// the user, with the number of matching words as rank. `recent` orders by
    /// time instead of rank. Returns the page from `offset` and the total.
    pub fn search(
        &self,
        user: &UserId,
        rooms: &[OwnedRoomId],
        query: &str,
        recent: bool,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<SearchHit>, usize)> {
        let words = tokenize(query);
        if words.is_empty() {
            return Err(Error::invalid_param("The search term has no words"));
        }
        let mut hits = Vec::new();
        for room in rooms {
            let Some(meta) = self.meta(room)? else {
                continue;
            };
            // Counts that contain every word.
            let mut matching: Option<HashMap<u64, u64>> = None;
            for word in &words {
                let rows = self.db.scan_prefix(
                    TOKENSHORTROOMIDCOUNT_SHORTEVENTID,
                    &prefix(&(word.clone(), meta.short)),
                )?;
                let found: HashMap<u64, u64> = rows
                    .into_iter()
                    .map(|((_, _, count), short)| (count, short))
                    .collect();
                matching = Some(match matching {
                    None => found,
                    Some(prev) => prev
                        .into_iter()
                        .filter(|(c, _)| found.contains_key(c))
                        .collect(),
                });
            }
            let until = self.joined_until(room, user)?;
            for (count, short) in matching.unwrap_or_default() {
                let (Some(pdu), Some(event_meta)) = (self.pdu(short)?, self.event_meta(short)?)
                else {
                    continue;
                };
                // Redacted events lose their text but keep index entries.
                let Some(text) = searchable_text(&pdu) else {
                    continue;
                };
                if !self.can_see(user, &pdu, &event_meta, until)? {
                    continue;
                }
                let text_words = tokenize(&text);
                let rank = words
                    .iter()
                    .map(|w| text_words.iter().filter(|t| *t == w).count())
                    .sum::<usize>() as f64;
                let event = self.client_event(&pdu, &event_meta, None)?;
                hits.push(SearchHit {
                    rank,
                    event,
                    room_id: room.clone(),
                    count,
                });
            }
        }
        if recent {
            hits.sort_by_key(|h| std::cmp::Reverse(h.count));
        } else {
            hits.sort_by(|a, b| b.rank.total_cmp(&a.rank).then(b.count.cmp(&a.count)));
        }
        let total = hits.len();
        let page = hits
            .into_iter()
            .skip(offset)
            .take(limit.clamp(1, 1000))
            .collect();
        Ok((page, total))
    }

    /// `/context`: an event with up to `limit` events around it and the state at it.
    pub fn context(
        &self,
        room: &RoomId,
        viewer: (&UserId, &str),
        event: &EventId,
        limit: usize,
        filter: &super::EventFilter,
    ) -> Result<Value> {
        let centre = self.event_for(room, event, viewer)?;
        let short = self
            .short_event_id(event)?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let meta = self
            .event_meta(short)?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let before_n = limit / 2;
        let after_n = limit - before_n;
        let before = self.messages(
            room,
            viewer,
            Some(&token(meta.count)),
            None,
            Direction::Backward,
            before_n.max(1),
            filter,
        )?;
        let after = self.messages(
            room,
            viewer,
            Some(&token(meta.count + 1)),
            None,
            Direction::Forward,
            after_n.max(1),
            filter,
        )?;
        let mut state = (*self.state.load(meta.state_before)?).clone();
        if let Some(pdu) = self.pdu(short)?
            && let Some(key) = pdu.state_key()
        {
            state.insert(
                self.state
                    .short_key_or_create(&pdu.kind().to_string(), key)?,
                short,
            );
        }
        let mut state_events = Vec::new();
        for &s in state.values() {
            if let (Some(pdu), Some(m)) = (self.pdu(s)?, self.event_meta(s)?) {
                if filter.lazy_load_members && pdu.kind().to_string() == "m.room.member" {
                    continue;
                }
                state_events.push(self.client_event(&pdu, &m, None)?);
            }
        }
        if filter.lazy_load_members {
            state_events.extend(before.state.iter().cloned());
            state_events.extend(after.state.iter().cloned());
        }
        let take = |chunk: Vec<String>, n: usize| -> Result<Vec<Value>> {
            let n = if limit == 0 { 0 } else { n };
            chunk
                .into_iter()
                .take(n)
                .map(|json| Ok(serde_json::from_str(&json)?))
                .collect()
        };
        Ok(json!({
            "event": centre,
            "events_before": take(before.chunk, before_n)?,
            "events_after": take(after.chunk, after_n)?,
            "start": before.end.unwrap_or_else(|| token(0)),
            "end": after.end.unwrap_or_else(|| token(self.db.visible_count() + 1)),
            "state": state_events,
        }))
    }

    /// The visible event closest to `ts`: the first at or after it (forward), or
    /// the last at or before it (backward).
    pub fn event_at_timestamp(
        &self,
        room: &RoomId,
        user: &UserId,
        ts: u64,
        forward: bool,
    ) -> Result<(String, u64)> {
        self.ensure_can_read(room, user)?;
        let meta = self.require_meta(room)?;
        let room_prefix = prefix(&(meta.short,));
        let until = self.joined_until(room, user)?;
        let rows = if forward {
            self.db.scan_from(
                SHORTROOMIDTSCOUNT_SHORTEVENTID,
                &room_prefix,
                &(meta.short, ts).encode(),
                200,
            )?
        } else {
            self.db.scan_rev(
                SHORTROOMIDTSCOUNT_SHORTEVENTID,
                &room_prefix,
                &(meta.short, ts.saturating_add(1)).encode(),
                200,
            )?
        };
        for ((_, event_ts, _), short) in rows {
            let (Some(pdu), Some(event_meta)) = (self.pdu(short)?, self.event_meta(short)?) else {
                continue;
            };
            if self.can_see(user, &pdu, &event_meta, until)? {
                return Ok((pdu.event_id.to_string(), event_ts));
            }
        }
        Err(Error::not_found(
            "No event found in that direction from that time",
        ))
    }

    /// Stores a content report for the server's admins.
    pub fn report(&self, reporter: &UserId, subject: Value, reason: Option<&str>) -> Result<()> {
        let mut batch = self.db.batch();
        let id = batch.next_count()?;
        let report = json!({ "reporter": reporter, "subject": subject, "reason": reason, "received_ts": now_ms() });
        batch.put(REPORTID_REPORT, &id, &Raw(serde_json::to_vec(&report)?));
        batch.commit()?;
        tracing::info!(%reporter, report = %report, "content reported");
        Ok(())
    }
}
