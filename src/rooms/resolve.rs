//! Forks: events from elsewhere may name any known events as `prev_events`, so a
//! room can have several forward extremities. The state before such an event,
//! and the room's current state across its extremities, come from state
//! resolution v2 (ruma's `resolve`). Local events always follow every
//! extremity, which joins the forks again.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, RoomId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    signatures::PublicKeyMap,
    state_res::{self, utils::event_id_set::EventIdSet},
};

use super::{EventDraft, Pdu, Rooms, append::rules_of, state::StateMap};
use crate::error::{Error, Result};

/// State keyed the way ruma's state resolution wants it.
pub type IdStateMap = state_res::StateMap<OwnedEventId>;

/// Where the state before a written event comes from.
pub(super) enum StateBefore {
    /// The room's current state (local events, which follow every extremity).
    Current,
    /// A resolved state (an event after some, not all, extremities).
    Map(StateMap),
}

/// What the room's current state becomes after a written event.
pub(super) enum CurrentAfter {
    /// The state after this event (it is the only extremity).
    ThisEvent,
    /// The resolution of all extremities, by event id.
    Resolved(IdStateMap),
}

impl Rooms {
    /// Converts a short-id state map to ruma's form.
    pub(super) fn to_id_map(&self, state: &StateMap) -> Result<IdStateMap> {
        let mut map = IdStateMap::with_capacity(state.len());
        for (&key, &short) in state {
            let (kind, state_key) = self.state.key_of(key)?;
            let Some(pdu) = self.pdu(short)? else {
                continue;
            };
            map.insert(
                (StateEventType::from(kind), state_key),
                pdu.event_id.clone(),
            );
        }
        Ok(map)
    }

    /// Converts ruma's form back; `this` maps an event not stored yet to its short id.
    pub(super) fn short_map_of(
        &self,
        map: &IdStateMap,
        this: Option<(&EventId, u64)>,
    ) -> Result<StateMap> {
        let mut state = StateMap::with_capacity(map.len());
        for ((kind, state_key), id) in map {
            let short = match this {
                Some((this_id, short)) if this_id == id => short,
                _ => self.short_event_id(id)?.ok_or_else(|| {
                    Error::internal(format!("resolved state names unknown event {id}"))
                })?,
            };
            state.insert(
                self.state
                    .short_key_or_create(&kind.to_string(), state_key)?,
                short,
            );
        }
        Ok(state)
    }

    /// The state after a stored event, by event id.
    fn state_after(&self, event: &EventId) -> Result<IdStateMap> {
        let short = self
            .short_event_id(event)?
            .ok_or_else(|| Error::not_found(format!("Unknown event {event}")))?;
        let meta = self
            .event_meta(short)?
            .ok_or_else(|| Error::internal("event without metadata"))?;
        let mut map = self.to_id_map(&*self.state.load(meta.state_before)?)?;
        if let Some(pdu) = self.pdu(short)?
            && let Some(key) = pdu.state_key()
        {
            map.insert(
                (StateEventType::from(pdu.kind().to_string()), key.to_owned()),
                pdu.event_id.clone(),
            );
        }
        Ok(map)
    }

    /// Every event in the auth chains of `events`.
    fn auth_chain(
        &self,
        events: impl IntoIterator<Item = OwnedEventId>,
    ) -> Result<EventIdSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for event in events {
            if let Some(pdu) = self.pdu_by_id(&event)? {
                todo.extend(pdu.auth_event_ids().iter().cloned());
            }
        }
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(pdu) = self.pdu_by_id(&id)? {
                todo.extend(
                    pdu.auth_event_ids()
                        .iter()
                        .filter(|a| !seen.contains(*a))
                        .cloned(),
                );
            }
        }
        Ok(seen.into_iter().collect())
    }

    /// v12's conflicted state subgraph: every event on an auth path from one
    /// conflicted event to another, the conflicted events included.
    fn conflicted_subgraph(
        conflicted: &state_res::StateMap<Vec<OwnedEventId>>,
        fetch: impl Fn(&EventId) -> Option<Arc<Pdu>>,
    ) -> Option<EventIdSet<OwnedEventId>> {
        let targets: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
        // Everything reachable from a conflicted event along auth edges.
        let mut reachable = HashSet::new();
        let mut todo: Vec<OwnedEventId> = targets.iter().cloned().collect();
        let mut parents: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
        while let Some(id) = todo.pop() {
            if !reachable.insert(id.clone()) {
                continue;
            }
            let auth = fetch(&id)?.auth_event_ids().to_vec();
            todo.extend(auth.iter().cloned());
            parents.insert(id, auth);
        }
        // Of those, the ones from which a conflicted event can be reached again.
        let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
        fn leads_to_target(
            id: &OwnedEventId,
            targets: &HashSet<OwnedEventId>,
            parents: &HashMap<OwnedEventId, Vec<OwnedEventId>>,
            reaches: &mut HashMap<OwnedEventId, bool>,
            depth: usize,
        ) -> bool {
            if let Some(&known) = reaches.get(id) {
                return known;
            }
            reaches.insert(id.clone(), false); // auth graphs are acyclic; this guards anyway
            let found = depth < 10_000
                && parents.get(id).is_some_and(|ps| {
                    ps.iter().any(|p| {
                        targets.contains(p)
                            || leads_to_target(p, targets, parents, reaches, depth + 1)
                    })
                });
            reaches.insert(id.clone(), found);
            found
        }
        let mut subgraph = EventIdSet::new();
        for id in &reachable {
            if targets.contains(id) || leads_to_target(id, &targets, &parents, &mut reaches, 0) {
                subgraph.insert(id.clone());
            }
        }
        Some(subgraph)
    }

    /// State resolution v2 over several states. `pending` is an event being
    /// written (not stored yet) that the states may name.
    pub(super) fn resolve(
        &self,
        rules: &RoomVersionRules,
        states: &[IdStateMap],
        pending: Option<&Arc<Pdu>>,
    ) -> Result<IdStateMap> {
        if let [only] = states {
            return Ok(only.clone());
        }
        let v2 = rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::internal("this room version has no state resolution v2"))?;
        let fetch = |id: &EventId| match pending {
            Some(pdu) if pdu.event_id == id => Some(pdu.clone()),
            _ => self.pdu_by_id(id).ok().flatten(),
        };
        let mut chains = Vec::with_capacity(states.len());
        for state in states {
            let mut starts: Vec<OwnedEventId> = state.values().cloned().collect();
            if let Some(pdu) = pending
                && state.values().any(|id| *id == pdu.event_id)
            {
                starts.extend(pdu.auth_event_ids().iter().cloned());
            }
            chains.push(self.auth_chain(starts)?);
        }
        state_res::resolve(
            &rules.authorization,
            v2,
            states.iter(),
            chains,
            fetch,
            |conflicted| Self::conflicted_subgraph(conflicted, fetch),
        )
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))
    }

    /// Appends an event that did not originate here: verified, placed after its
    /// `prev_events` (which must be known), authorized against the state before
    /// it, which is the resolution of the states after its prev events. The
    /// room's current state becomes the resolution across all extremities.
    pub async fn append_incoming(
        &self,
        room: &RoomId,
        mut obj: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<OwnedEventId> {
        let handle = self.handle(room);
        let _guard = handle.lock.lock().await;
        let meta = self.require_meta(room)?;
        let rules = rules_of(&meta.version)?;
        let event_id = super::incoming::verify_foreign(&rules, &mut obj, keys)?;
        if self.short_event_id(&event_id)?.is_some() {
            return Ok(event_id); // already have it
        }
        let prev: Vec<OwnedEventId> = match obj.get("prev_events") {
            Some(ruma::CanonicalJsonValue::Array(ids)) => ids
                .iter()
                .filter_map(|v| v.as_str().and_then(|s| OwnedEventId::try_from(s).ok()))
                .collect(),
            _ => return Err(Error::bad_json("The event has no prev_events")),
        };
        if prev.is_empty() {
            return Err(Error::bad_json(
                "Only a create event may have no prev_events",
            ));
        }
        let mut prev_states = Vec::with_capacity(prev.len());
        for p in &prev {
            if self.short_event_id(p)?.is_none() {
                return Err(Error::not_found(format!(
                    "The prev event {p} is unknown here"
                )));
            }
            prev_states.push(self.state_after(p)?);
        }
        let before_ids = self.resolve(&rules, &prev_states, None)?;
        let before = self.short_map_of(&before_ids, None)?;
        let pdu = self.check(room, &rules, event_id.clone(), &obj, &before)?;

        // The extremities after this event, and the current state across them.
        let mut leaves: Vec<OwnedEventId> = meta
            .leaves
            .iter()
            .filter(|l| !prev.contains(l))
            .cloned()
            .collect();
        leaves.push(event_id.clone());
        let current = if leaves.len() == 1 {
            CurrentAfter::ThisEvent
        } else {
            let mut after_this = before_ids.clone();
            if let Some(key) = pdu.state_key() {
                after_this.insert(
                    (StateEventType::from(pdu.kind().to_string()), key.to_owned()),
                    event_id.clone(),
                );
            }
            let mut states = vec![after_this];
            for leaf in leaves.iter().filter(|l| **l != event_id) {
                states.push(self.state_after(leaf)?);
            }
            CurrentAfter::Resolved(self.resolve(&rules, &states, Some(&pdu))?)
        };
        let draft = EventDraft {
            kind: pdu.kind().clone(),
            ..EventDraft::new(pdu.kind().clone(), serde_json::Value::Null)
        };
        // Local members hear of it like of any event (once room state allows).
        let notify = self.push.evaluate(self, room, &pdu).await?;
        self.write(
            room,
            meta,
            pdu,
            obj,
            &draft,
            StateBefore::Map(before),
            leaves,
            current,
            &notify,
        )?;
        Ok(event_id)
    }

    /// Used by tests and federation alike: the forward extremities.
    pub fn forward_extremities(&self, room: &RoomId) -> Result<Vec<OwnedEventId>> {
        Ok(self.require_meta(room)?.leaves)
    }
}

#[cfg(test)]
mod tests {
    use ruma::RoomVersionId;
    use serde_json::json;

    use crate::rooms::{
        EventDraft,
        test_support::{fixture, user},
    };

    #[tokio::test]
    async fn forks_are_resolved_and_joined_again() {
        for version in [RoomVersionId::V11, RoomVersionId::V12] {
            let f = fixture(version).await;
            let base = f.rooms.forward_extremities(&f.room).unwrap();
            let name = |n: &str, ts: u64| {
                f.signed(f.draft_after(
                    &base,
                    ts,
                    "alice",
                    "m.room.name",
                    Some(""),
                    json!({ "name": n }),
                ))
            };
            let a = f
                .rooms
                .append_incoming(&f.room, name("A", 1_700_000_000_000), &f.keys())
                .await
                .unwrap();
            let b = f
                .rooms
                .append_incoming(&f.room, name("B", 1_700_000_001_000), &f.keys())
                .await
                .unwrap();
            let mut leaves = f.rooms.forward_extremities(&f.room).unwrap();
            leaves.sort();
            let mut expected = vec![a.clone(), b.clone()];
            expected.sort();
            assert_eq!(leaves, expected, "two forward extremities");
            // The later of two equal-power changes wins.
            let current = f
                .rooms
                .state_content_for(&f.room, &user("alice"), "m.room.name", "")
                .unwrap();
            assert_eq!(current["name"], "B");

            // A local event follows both extremities and joins the forks.
            let joined = f
                .rooms
                .append(
                    &f.room,
                    &user("bob"),
                    EventDraft::new("m.room.message", json!({ "body": "merge" })),
                )
                .await
                .unwrap();
            let pdu = f.rooms.pdu_by_id(&joined).unwrap().unwrap();
            let mut prev = pdu.prev_event_ids().to_vec();
            prev.sort();
            assert_eq!(prev, expected);
            assert_eq!(f.rooms.forward_extremities(&f.room).unwrap(), vec![joined]);
            // Re-delivering a known event changes nothing.
            assert_eq!(
                f.rooms
                    .append_incoming(&f.room, name("A", 1_700_000_000_000), &f.keys())
                    .await
                    .unwrap(),
                a
            );
        }
    }

    #[tokio::test]
    async fn a_ban_on_one_branch_wins_over_a_send_on_the_other() {
        let f = fixture(RoomVersionId::V12).await;
        let base = f.rooms.forward_extremities(&f.room).unwrap();
        let ban = f.signed(f.draft_after(
            &base,
            1_700_000_000_000,
            "alice",
            "m.room.member",
            Some("@bob:localhost"),
            json!({ "membership": "ban" }),
        ));
        let message = f.signed(f.draft_after(
            &base,
            1_700_000_000_500,
            "bob",
            "m.room.message",
            None,
            json!({ "body": "sent before I knew" }),
        ));
        f.rooms
            .append_incoming(&f.room, ban, &f.keys())
            .await
            .unwrap();
        // Bob's message is valid at its place in the graph (he was joined there).
        f.rooms
            .append_incoming(&f.room, message, &f.keys())
            .await
            .expect("accepted on its branch");
        assert_eq!(f.rooms.forward_extremities(&f.room).unwrap().len(), 2);
        // The resolved current state has him banned.
        assert_eq!(
            f.rooms
                .membership(&f.room, &user("bob"))
                .unwrap()
                .as_deref(),
            Some("ban")
        );
        let err = f
            .rooms
            .append(
                &f.room,
                &user("bob"),
                EventDraft::new("m.room.message", json!({ "body": "still here?" })),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ruma::api::error::ErrorKind::Forbidden);
    }

    #[tokio::test]
    async fn events_after_unknown_events_are_refused() {
        let f = fixture(RoomVersionId::V12).await;
        let unknown = vec![
            ruma::OwnedEventId::try_from("$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap(),
        ];
        let obj = f.signed(f.draft_after(
            &unknown,
            1_700_000_000_000,
            "bob",
            "m.room.message",
            None,
            json!({ "body": "?" }),
        ));
        let err = f
            .rooms
            .append_incoming(&f.room, obj, &f.keys())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ruma::api::error::ErrorKind::NotFound);
    }
}
