//! Test support: a room on a temporary database, and foreign-looking PDUs
//! signed with the server's key (or another) to feed the checks.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, RoomVersionId, ServerName, UserId,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet, hash_and_sign_event},
};
use serde_json::{Map, json};

use crate::{
    federation::keys::SigningKey,
    rooms::{CreateRoom, Preset, Rooms},
    storage::Engine,
};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub rooms: Rooms,
    pub key: Arc<SigningKey>,
    pub room: OwnedRoomId,
    pub version: RoomVersionId,
}

pub fn user(name: &str) -> ruma::OwnedUserId {
    UserId::parse(format!("@{name}:localhost")).unwrap()
}

/// A public room created by alice, with bob joined.
pub async fn fixture(version: RoomVersionId) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Engine::open(&dir.path().join("db")).unwrap();
    let server: &ServerName = "localhost".try_into().unwrap();
    let key = Arc::new(SigningKey::load_or_create(dir.path(), server).unwrap());
    let users = crate::users::Users::new(db.clone(), server.to_owned());
    let outbox = crate::outbox::Outbox::new(db.clone(), Default::default());
    let push = Arc::new(crate::push::Push::new(db.clone(), users, outbox, true));
    let rooms = Rooms::new(db, server.to_owned(), key.clone(), push);
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

impl Fixture {
    pub fn keys(&self) -> PublicKeyMap {
        let mut set = PublicKeySet::new();
        set.insert(self.key.key_id().to_string(), self.key.public_key());
        let mut map = PublicKeyMap::new();
        map.insert("localhost".into(), set);
        map
    }

    /// A PDU after the room's current extremities, authorized by the current state.
    pub fn draft(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: serde_json::Value,
    ) -> CanonicalJsonObject {
        let leaves = self.rooms.require_meta(&self.room).unwrap().leaves;
        self.draft_after(&leaves, 1_700_000_000_000, sender, kind, state_key, content)
    }

    /// A PDU after `prev`, with its auth events taken from the current state.
    pub fn draft_after(
        &self,
        prev: &[OwnedEventId],
        ts: u64,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: serde_json::Value,
    ) -> CanonicalJsonObject {
        let meta = self.rooms.require_meta(&self.room).unwrap();
        let state = self.rooms.state.load(meta.current_state).unwrap();
        let mut auth = Vec::new();
        let member = format!("@{sender}:localhost");
        for (k, key) in [
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", member.as_str()),
        ] {
            if k == "m.room.create" && self.version == RoomVersionId::V12 {
                continue;
            }
            if let Some(e) = self.rooms.state_event(&state, k, key).unwrap() {
                auth.push(json!(e.event_id));
            }
        }
        let mut obj = json!({
            "room_id": self.room, "sender": member, "type": kind, "content": content,
            "prev_events": prev, "auth_events": auth, "depth": 100, "origin_server_ts": ts,
        });
        if let Some(k) = state_key {
            obj["state_key"] = json!(k);
        }
        serde_json::from_value(obj).unwrap()
    }

    pub fn sign(&self, obj: &mut CanonicalJsonObject, pair: &Ed25519KeyPair) {
        let rules = self.version.rules().unwrap();
        hash_and_sign_event("localhost", pair, obj, &rules.redaction).unwrap();
    }

    pub fn signed(&self, mut obj: CanonicalJsonObject) -> CanonicalJsonObject {
        self.sign(&mut obj, self.key.pair());
        obj
    }
}
