//! Checking an event that did not originate here (federation will call this):
//! signatures and content hash first, then the auth rules against the state
//! before the event.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, OwnedEventId, RoomId,
    canonical_json::redact_in_place,
    signatures::{PublicKeyMap, Verified, reference_hash, verify_event},
};

use super::{Pdu, Rooms, append::rules_of};
use crate::error::{Error, Result};

impl Rooms {
    /// Verifies a foreign PDU and authorizes it against the room's current
    /// state (the state at its prev_events while rooms are linear). Returns the
    /// event as it must be stored: redacted if its content hash does not match.
    pub fn check_incoming(
        &self,
        room: &RoomId,
        mut obj: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<Arc<Pdu>> {
        let meta = self.require_meta(room)?;
        let rules = rules_of(&meta.version)?;
        let verified = verify_event(keys, &obj, &rules)
            .map_err(|e| Error::forbidden(format!("The event's signatures do not verify: {e}")))?;
        if verified == Verified::Signatures {
            // The spec: a content hash mismatch means the event is stored redacted.
            redact_in_place(&mut obj, &rules.redaction, None)
                .map_err(|e| Error::bad_json(format!("Cannot redact the event: {e}")))?;
        }
        let hash = reference_hash(&obj, &rules)
            .map_err(|e| Error::bad_json(format!("Cannot hash the event: {e}")))?;
        let event_id = OwnedEventId::try_from(format!("${hash}"))
            .map_err(|e| Error::internal(e.to_string()))?;
        let state = self.state.load(meta.current_state)?;
        self.check(room, &rules, event_id, &obj, &state)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{
        CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, RoomVersionId, ServerName, UserId,
        serde::Base64,
        signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet, hash_and_sign_event},
    };
    use serde_json::{Map, json};

    use crate::{
        federation::keys::SigningKey,
        rooms::{CreateRoom, EventDraft, Preset, Rooms},
        storage::Engine,
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        rooms: Rooms,
        key: Arc<SigningKey>,
        room: OwnedRoomId,
        version: RoomVersionId,
    }

    fn user(name: &str) -> ruma::OwnedUserId {
        UserId::parse(format!("@{name}:localhost")).unwrap()
    }

    async fn fixture(version: RoomVersionId) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Engine::open(&dir.path().join("db")).unwrap();
        let server: &ServerName = "localhost".try_into().unwrap();
        let key = Arc::new(SigningKey::load_or_create(dir.path(), server).unwrap());
        let rooms = Rooms::new(db, server.to_owned(), key.clone());
        let request = CreateRoom {
            version: version.clone(),
            preset: Preset::PublicChat,
            creation_content: Map::new(),
            power_level_override: None,
            initial_state: Vec::new(),
            name: None,
            topic: None,
            canonical_alias: None,
            invite: Vec::new(),
            is_direct: false,
        };
        let room = rooms
            .create_room(&user("alice"), Map::new(), request)
            .await
            .unwrap();
        rooms
            .join(&room, &user("bob"), None, Map::new())
            .await
            .unwrap();
        Fixture {
            _dir: dir,
            rooms,
            key,
            room,
            version,
        }
    }

    fn our_keys(f: &Fixture) -> PublicKeyMap {
        let mut set = PublicKeySet::new();
        set.insert(f.key.key_id().to_string(), f.key.public_key());
        let mut map = PublicKeyMap::new();
        map.insert("localhost".into(), set);
        map
    }

    /// A PDU like the room's next event would be, before signing.
    fn draft(
        f: &Fixture,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: serde_json::Value,
    ) -> CanonicalJsonObject {
        let meta = f.rooms.require_meta(&f.room).unwrap();
        let state = f.rooms.state.load(meta.current_state).unwrap();
        let mut auth = Vec::new();
        for (k, key) in [
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", &*format!("@{sender}:localhost")),
        ] {
            if k == "m.room.create" && f.version == RoomVersionId::V12 {
                continue;
            }
            if let Some(e) = f.rooms.state_event(&state, k, key).unwrap() {
                auth.push(json!(e.event_id));
            }
        }
        let mut obj = json!({
            "room_id": f.room, "sender": format!("@{sender}:localhost"), "type": kind, "content": content,
            "prev_events": meta.leaves, "auth_events": auth, "depth": 100, "origin_server_ts": 1_700_000_000_000u64,
        });
        if let Some(k) = state_key {
            obj["state_key"] = json!(k);
        }
        serde_json::from_value(obj).unwrap()
    }

    fn sign(f: &Fixture, obj: &mut CanonicalJsonObject, pair: &Ed25519KeyPair) {
        let rules = f.version.rules().unwrap();
        hash_and_sign_event("localhost", pair, obj, &rules.redaction).unwrap();
    }

    fn rejected(result: crate::error::Result<Arc<crate::rooms::Pdu>>, why: &str) {
        let err = result.expect_err(why).to_string();
        assert!(!err.is_empty());
    }

    #[tokio::test]
    async fn a_well_formed_event_from_a_member_passes() {
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            let f = fixture(version).await;
            let mut obj = draft(&f, "bob", "m.room.message", None, json!({ "body": "hi" }));
            sign(&f, &mut obj, f.key.pair());
            f.rooms
                .check_incoming(&f.room, obj, &our_keys(&f))
                .expect("allowed");
        }
    }

    #[tokio::test]
    async fn forged_signatures_are_rejected() {
        let f = fixture(RoomVersionId::V12).await;
        let other = Ed25519KeyPair::from_der(
            &Ed25519KeyPair::generate(),
            f.key.pair().version().to_owned(),
        )
        .unwrap();
        let mut obj = draft(
            &f,
            "bob",
            "m.room.message",
            None,
            json!({ "body": "forged" }),
        );
        sign(&f, &mut obj, &other);
        rejected(
            f.rooms.check_incoming(&f.room, obj, &our_keys(&f)),
            "signed with another key",
        );

        // A valid signature whose bytes were altered.
        let mut obj = draft(
            &f,
            "bob",
            "m.room.message",
            None,
            json!({ "body": "tampered" }),
        );
        sign(&f, &mut obj, f.key.pair());
        let sig = obj
            .get_mut("signatures")
            .unwrap()
            .as_object_mut()
            .unwrap()
            .get_mut("localhost")
            .unwrap();
        let sig = sig.as_object_mut().unwrap().values_mut().next().unwrap();
        *sig = CanonicalJsonValue::String(
            Base64::<ruma::serde::base64::Standard>::new(vec![0u8; 64]).encode(),
        );
        rejected(
            f.rooms.check_incoming(&f.room, obj, &our_keys(&f)),
            "altered signature",
        );
    }

    #[tokio::test]
    async fn tampered_content_is_stored_redacted() {
        let f = fixture(RoomVersionId::V11).await;
        let mut obj = draft(
            &f,
            "bob",
            "m.room.message",
            None,
            json!({ "body": "original" }),
        );
        sign(&f, &mut obj, f.key.pair());
        obj.insert(
            "content".into(),
            serde_json::from_value(json!({ "body": "swapped" })).unwrap(),
        );
        let pdu = f
            .rooms
            .check_incoming(&f.room, obj, &our_keys(&f))
            .expect("signatures still verify");
        assert_eq!(
            pdu.content_value(),
            json!({}),
            "the content hash mismatch redacts it"
        );
    }

    #[tokio::test]
    async fn senders_outside_the_room_are_rejected() {
        let f = fixture(RoomVersionId::V12).await;
        let mut obj = draft(
            &f,
            "mallory",
            "m.room.message",
            None,
            json!({ "body": "let me in" }),
        );
        sign(&f, &mut obj, f.key.pair());
        rejected(
            f.rooms.check_incoming(&f.room, obj, &our_keys(&f)),
            "mallory is not joined",
        );
    }

    #[tokio::test]
    async fn power_level_escalation_is_rejected() {
        for version in [RoomVersionId::V10, RoomVersionId::V12] {
            let f = fixture(version).await;
            let mut content = f
                .rooms
                .state_content_for(&f.room, &user("alice"), "m.room.power_levels", "")
                .unwrap();
            content["users"]["@bob:localhost"] = json!(100);
            let mut obj = draft(&f, "bob", "m.room.power_levels", Some(""), content);
            sign(&f, &mut obj, f.key.pair());
            rejected(
                f.rooms.check_incoming(&f.room, obj, &our_keys(&f)),
                "bob cannot raise himself",
            );
            // And locally, through the ordinary path.
            let mut again = f
                .rooms
                .state_content_for(&f.room, &user("alice"), "m.room.power_levels", "")
                .unwrap();
            again["users"]["@bob:localhost"] = json!(50);
            let err = f
                .rooms
                .append(
                    &f.room,
                    &user("bob"),
                    EventDraft::state("m.room.power_levels", "", again),
                )
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ruma::api::error::ErrorKind::Forbidden);
        }
    }

    #[tokio::test]
    async fn wrong_auth_events_are_rejected() {
        let f = fixture(RoomVersionId::V11).await;
        let message = f
            .rooms
            .append(
                &f.room,
                &user("bob"),
                EventDraft::new("m.room.message", json!({ "body": "x" })),
            )
            .await
            .unwrap();
        // A message event is not something an event's authority can rest on.
        let mut obj = draft(&f, "bob", "m.room.message", None, json!({ "body": "y" }));
        obj.insert(
            "auth_events".into(),
            CanonicalJsonValue::Array(vec![message.as_str().into()]),
        );
        sign(&f, &mut obj, f.key.pair());
        rejected(
            f.rooms.check_incoming(&f.room, obj, &our_keys(&f)),
            "bogus auth events",
        );
        // The state before the event decides: bob, banned now, cannot send with old auth events.
        let stale = draft(&f, "bob", "m.room.message", None, json!({ "body": "z" }));
        f.rooms
            .ban(&f.room, &user("alice"), &user("bob"), None)
            .await
            .unwrap();
        let mut stale = stale;
        sign(&f, &mut stale, f.key.pair());
        rejected(
            f.rooms.check_incoming(&f.room, stale, &our_keys(&f)),
            "bob is banned now",
        );
    }
}
