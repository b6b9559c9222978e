//! Each user's push rules: the spec's server-default rules, with the user's own
//! rules and their changes to the defaults (enabled, actions) on top.
//!
//! Stored as the user's `m.push_rules` global account data (`{"global": …}`),
//! as clients expect to find them in `/sync`. On reading, the stored set is
//! merged into the current server defaults, so rules added by a newer spec
//! version reach existing users while their own choices are kept.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId, push::Ruleset};
use serde_json::{Value, json};

use crate::{error::Result, users::Users};

/// The account data type push rules are stored under.
pub const PUSH_RULES: &str = "m.push_rules";

/// Users whose rules are kept in memory: evaluating an event reads the rules
/// of every member of the room.
const CACHE: usize = 20_000;

#[derive(Debug)]
pub struct PushRules {
    users: Users,
    cache: Mutex<LruCache<OwnedUserId, Rules>>,
    /// Counts changes to anyone's rules, for what keeps rules of its own
    /// (room profiles, `profiles.rs`).
    generation: AtomicU64,
    /// Serialises read-modify-write updates (rare, and cheap).
    writing: Mutex<()>,
}

/// A user's effective rules and their [`RulesShape`].
#[derive(Debug, Clone)]
pub struct Rules {
    pub set: Arc<Ruleset>,
    pub shape: RulesShape,
}

/// Identifies a ruleset with its owner's user ID and localpart taken out:
/// the server defaults of every user have the same shape. For an event that
/// mentions neither user, two users with one shape get the same actions
/// (see `Push::evaluate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RulesShape([u8; 16]);

impl Rules {
    fn new(user: &UserId, set: Ruleset) -> Result<Self> {
        // Serialised strings never hold a raw control character, so the
        // placeholders cannot be confused with anything in the rules.
        let text = serde_json::to_string(&set)?
            .replace(user.as_str(), "\u{1}U")
            .replace(user.localpart(), "\u{1}L");
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let mut shape = [0; 16];
        shape.copy_from_slice(&digest.as_ref()[..16]);
        Ok(Self {
            set: Arc::new(set),
            shape: RulesShape(shape),
        })
    }
}

impl PushRules {
    pub fn new(users: Users) -> Self {
        let capacity = NonZeroUsize::new(CACHE).unwrap_or(NonZeroUsize::MIN);
        Self {
            users,
            cache: Mutex::new(LruCache::new(capacity)),
            generation: AtomicU64::new(0),
            writing: Mutex::new(()),
        }
    }

    /// The user's effective rules.
    pub fn get(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        Ok(self.get_with_shape(user)?.set)
    }

    /// The user's effective rules with their shape.
    pub fn get_with_shape(&self, user: &UserId) -> Result<Rules> {
        if let Some(rules) = self.cache.lock().get(user) {
            return Ok(rules.clone());
        }
        let rules = Rules::new(user, self.load(user)?)?;
        self.cache.lock().put(user.to_owned(), rules.clone());
        Ok(rules)
    }

    /// The rules as the `m.push_rules` account data content.
    pub fn as_account_data(&self, user: &UserId) -> Result<Value> {
        Ok(json!({ "global": &*self.get(user)? }))
    }

    /// Changes the user's rules with `change`, which may refuse with an error
    /// (nothing is written then).
    pub fn update<T>(
        &self,
        user: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<T>,
    ) -> Result<T> {
        let _writing = self.writing.lock();
        let mut rules = self.load(user)?;
        let out = change(&mut rules)?;
        let content = serde_json::value::to_raw_value(&json!({ "global": &rules }))?;
        self.users
            .set_account_data(user, None, PUSH_RULES, content)?;
        self.cache
            .lock()
            .put(user.to_owned(), Rules::new(user, rules)?);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(out)
    }

    /// Forgets a user's cached rules (account deactivation).
    pub fn forget(&self, user: &UserId) {
        self.cache.lock().pop(user);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes with every change to anyone's rules (taken before reading them).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn load(&self, user: &UserId) -> Result<Ruleset> {
        let defaults = Ruleset::server_default(user);
        let Some(raw) = self.users.account_data(user, None, PUSH_RULES)? else {
            return Ok(defaults);
        };
        #[derive(serde::Deserialize)]
        struct Stored {
            global: Ruleset,
        }
        match serde_json::from_str::<Stored>(raw.get()) {
            Ok(Stored { global: mut stored }) => {
                stored.update_with_server_default(defaults);
                Ok(stored)
            }
            Err(e) => {
                tracing::warn!(%user, error = %e, "stored push rules are unreadable; using the defaults");
                Ok(defaults)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The spec's default rules, evaluated as bigd evaluates them.

    use ruma::{
        UInt,
        events::AnySyncTimelineEvent,
        owned_room_id,
        push::{Action, NewPushRule, NewSimplePushRule, PushConditionRoomCtx, RuleKind, Tweak},
        serde::Raw,
        user_id,
    };

    use super::*;

    async fn actions(rules: &Ruleset, members: u64, event: Value) -> Vec<Action> {
        let event: Raw<AnySyncTimelineEvent> = Raw::new(&event).unwrap().cast_unchecked();
        let ctx = PushConditionRoomCtx::new(
            owned_room_id!("!r:localhost"),
            UInt::new_saturating(members),
            user_id!("@bob:localhost").to_owned(),
            "Bob".into(),
        );
        rules.get_actions(&event, &ctx).await.to_vec()
    }

    fn message(body: Value) -> Value {
        json!({
            "type": "m.room.message", "sender": "@alice:localhost", "event_id": "$e",
            "origin_server_ts": 1, "content": body,
        })
    }

    fn notifies(a: &[Action]) -> bool {
        a.iter().any(Action::should_notify)
    }

    fn highlights(a: &[Action]) -> bool {
        a.iter().any(Action::is_highlight)
    }

    fn rings(a: &[Action]) -> bool {
        a.iter()
            .any(|a| matches!(a, Action::SetTweak(Tweak::Sound(_))))
    }

    fn defaults() -> Ruleset {
        Ruleset::server_default(user_id!("@bob:localhost"))
    }

    #[tokio::test]
    async fn one_to_one_messages_ring_and_group_messages_only_notify() {
        let text = message(json!({ "msgtype": "m.text", "body": "hi" }));
        let dm = actions(&defaults(), 2, text.clone()).await;
        assert!(notifies(&dm) && rings(&dm) && !highlights(&dm), "{dm:?}");
        let group = actions(&defaults(), 5, text).await;
        assert!(
            notifies(&group) && !rings(&group) && !highlights(&group),
            "{group:?}"
        );
    }

    #[tokio::test]
    async fn encrypted_one_to_one_rings() {
        let event = json!({
            "type": "m.room.encrypted", "sender": "@alice:localhost", "event_id": "$e",
            "origin_server_ts": 1, "content": { "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" },
        });
        let got = actions(&defaults(), 2, event.clone()).await;
        assert!(notifies(&got) && rings(&got), "{got:?}");
        let group = actions(&defaults(), 3, event).await;
        assert!(notifies(&group) && !rings(&group), "{group:?}");
    }

    #[tokio::test]
    async fn notices_and_edits_are_suppressed() {
        let notice = message(json!({ "msgtype": "m.notice", "body": "bot says" }));
        assert!(!notifies(&actions(&defaults(), 2, notice).await));
        let edit = message(json!({
            "msgtype": "m.text", "body": "* fixed",
            "m.new_content": { "msgtype": "m.text", "body": "fixed" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" },
        }));
        assert!(!notifies(&actions(&defaults(), 2, edit).await));
    }

    #[tokio::test]
    async fn a_user_mention_highlights() {
        let mention = message(json!({
            "msgtype": "m.text", "body": "look",
            "m.mentions": { "user_ids": ["@bob:localhost"] },
        }));
        let got = actions(&defaults(), 10, mention).await;
        assert!(notifies(&got) && highlights(&got) && rings(&got), "{got:?}");
        let other = message(json!({
            "msgtype": "m.text", "body": "look",
            "m.mentions": { "user_ids": ["@carol:localhost"] },
        }));
        assert!(!highlights(&actions(&defaults(), 10, other).await));
    }

    #[tokio::test]
    async fn invites_for_me_and_calls_ring() {
        let invite = json!({
            "type": "m.room.member", "sender": "@alice:localhost", "event_id": "$e",
            "origin_server_ts": 1, "state_key": "@bob:localhost",
            "content": { "membership": "invite" },
        });
        let got = actions(&defaults(), 2, invite).await;
        assert!(notifies(&got) && rings(&got), "{got:?}");
        let call = json!({
            "type": "m.call.invite", "sender": "@alice:localhost", "event_id": "$e",
            "origin_server_ts": 1,
            "content": { "call_id": "c", "lifetime": 60000, "version": "1", "offer": { "type": "offer", "sdp": "" } },
        });
        let got = actions(&defaults(), 2, call).await;
        assert!(notifies(&got) && rings(&got), "{got:?}");
    }

    #[tokio::test]
    async fn a_muted_room_rule_wins_over_the_defaults() {
        let mut rules = defaults();
        let mute = NewPushRule::Room(NewSimplePushRule::new(
            owned_room_id!("!r:localhost"),
            Vec::new(),
        ));
        rules.insert(mute, None, None).unwrap();
        let text = message(json!({ "msgtype": "m.text", "body": "hi" }));
        assert!(!notifies(&actions(&rules, 2, text).await));
    }

    #[tokio::test]
    async fn the_master_rule_silences_everything_when_enabled() {
        let mut rules = defaults();
        rules
            .set_enabled(RuleKind::Override, ".m.rule.master", true)
            .unwrap();
        let mention = message(json!({
            "msgtype": "m.text", "body": "look",
            "m.mentions": { "user_ids": ["@bob:localhost"] },
        }));
        assert!(!notifies(&actions(&rules, 2, mention).await));
    }

    #[test]
    fn stored_rules_keep_the_users_choices_over_new_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::Engine::open(dir.path()).unwrap();
        let users = Users::new(db, "localhost".try_into().unwrap());
        let rules = PushRules::new(users.clone());
        let bob = user_id!("@bob:localhost");
        rules
            .update(bob, |r| {
                r.set_enabled(RuleKind::Override, ".m.rule.suppress_notices", false)
                    .map_err(|_| crate::error::Error::not_found("rule"))
            })
            .unwrap();
        // A fresh reader (a restart) merges the stored set into the defaults.
        let reread = PushRules::new(users).get(bob).unwrap();
        let rule = reread
            .get(RuleKind::Override, ".m.rule.suppress_notices")
            .unwrap();
        assert!(!rule.enabled());
        assert!(
            reread
                .get(RuleKind::Override, ".m.rule.is_user_mention")
                .is_some()
        );
    }
}
