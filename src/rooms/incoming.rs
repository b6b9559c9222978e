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
        let event_id = verify_foreign(&rules, &mut obj, keys)?;
        let state = self.state.load(meta.current_state)?;
        self.check(room, &rules, event_id, &obj, &state)
    }
}

/// Checks a foreign event's signatures (a forged one is rejected) and content
/// hash (a mismatch means it is kept redacted, as the spec says); returns its
/// event id.
pub(super) fn verify_foreign(
    rules: &ruma::room_version_rules::RoomVersionRules,
    obj: &mut CanonicalJsonObject,
    keys: &PublicKeyMap,
) -> Result<OwnedEventId> {
    let verified = verify_event(keys, obj, rules)
        .map_err(|e| Error::forbidden(format!("The event's signatures do not verify: {e}")))?;
    if verified == Verified::Signatures {
        redact_in_place(obj, &rules.redaction, None)
            .map_err(|e| Error::bad_json(format!("Cannot redact the event: {e}")))?;
    }
    let hash = reference_hash(obj, rules)
        .map_err(|e| Error::bad_json(format!("Cannot hash the event: {e}")))?;
    OwnedEventId::try_from(format!("${hash}")).map_err(|e| Error::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{CanonicalJsonValue, RoomVersionId, serde::Base64, signatures::Ed25519KeyPair};
    use serde_json::json;

    use crate::rooms::{
        EventDraft,
        test_support::{fixture, user},
    };

    fn rejected(result: crate::error::Result<Arc<crate::rooms::Pdu>>, why: &str) {
        let err = result.expect_err(why).to_string();
        assert!(!err.is_empty());
    }

    #[tokio::test]
    async fn a_well_formed_event_from_a_member_passes() {
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            let f = fixture(version).await;
            let mut obj = f.draft("bob", "m.room.message", None, json!({ "body": "hi" }));
            f.sign(&mut obj, f.key.pair());
            f.rooms
                .check_incoming(&f.room, obj, &f.keys())
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
        let mut obj = f.draft("bob", "m.room.message", None, json!({ "body": "forged" }));
        f.sign(&mut obj, &other);
        rejected(
            f.rooms.check_incoming(&f.room, obj, &f.keys()),
            "signed with another key",
        );

        // A valid signature whose bytes were altered.
        let mut obj = f.draft("bob", "m.room.message", None, json!({ "body": "tampered" }));
        f.sign(&mut obj, f.key.pair());
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
            f.rooms.check_incoming(&f.room, obj, &f.keys()),
            "altered signature",
        );
    }

    #[tokio::test]
    async fn tampered_content_is_stored_redacted() {
        let f = fixture(RoomVersionId::V11).await;
        let mut obj = f.draft("bob", "m.room.message", None, json!({ "body": "original" }));
        f.sign(&mut obj, f.key.pair());
        obj.insert(
            "content".into(),
            serde_json::from_value(json!({ "body": "swapped" })).unwrap(),
        );
        let pdu = f
            .rooms
            .check_incoming(&f.room, obj, &f.keys())
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
        let mut obj = f.draft(
            "mallory",
            "m.room.message",
            None,
            json!({ "body": "let me in" }),
        );
        f.sign(&mut obj, f.key.pair());
        rejected(
            f.rooms.check_incoming(&f.room, obj, &f.keys()),
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
            let mut obj = f.draft("bob", "m.room.power_levels", Some(""), content);
            f.sign(&mut obj, f.key.pair());
            rejected(
                f.rooms.check_incoming(&f.room, obj, &f.keys()),
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
        let mut obj = f.draft("bob", "m.room.message", None, json!({ "body": "y" }));
        obj.insert(
            "auth_events".into(),
            CanonicalJsonValue::Array(vec![message.as_str().into()]),
        );
        f.sign(&mut obj, f.key.pair());
        rejected(
            f.rooms.check_incoming(&f.room, obj, &f.keys()),
            "bogus auth events",
        );
        // The state before the event decides: bob, banned now, cannot send with old auth events.
        let stale = f.draft("bob", "m.room.message", None, json!({ "body": "z" }));
        f.rooms
            .ban(&f.room, &user("alice"), &user("bob"), None)
            .await
            .unwrap();
        let mut stale = stale;
        f.sign(&mut stale, f.key.pair());
        rejected(
            f.rooms.check_incoming(&f.room, stale, &f.keys()),
            "bob is banned now",
        );
    }
}
