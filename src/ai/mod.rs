//! AI bots: local accounts that answer in rooms with the help of an
//! OpenAI-compatible model (see docs/ai.md).
//!
//! Each bot has one watcher task that follows its rooms the way `/sync` does
//! (storage watches registered before reading, so no event is missed and a
//! burst costs one read), joins on invite and hands each question to its own
//! reply task. Reply tasks wait for a per-user and a per-bot slot, so a slow
//! model delays only the answers queued behind it, never the watcher or
//! other rooms beyond the configured concurrency.

mod config;
pub mod context;
pub mod llm;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

pub use self::config::{AiConfig, BotConfig};
use self::{
    context::TimelineMessage,
    llm::{Llm, LlmError},
};
use crate::{
    Services,
    error::{Error, Result},
    rooms::{EventDraft, Pdu},
    storage::{USERIDROOMID_MEMBERSHIP, Watch, prefix},
};

/// The MSC4357 marker of a message that is still being written.
const LIVE: &str = "org.matrix.msc4357.live";
/// Bodies are cut here: an edit carries the text twice and events are
/// limited to 64 KiB.
const MAX_ANSWER_BYTES: usize = 24 * 1024;
/// Events read per room and wake-up; more in one burst are skipped (logged).
const MAX_EVENTS_PER_PASS: usize = 200;
const TYPING: Duration = Duration::from_secs(30);
const NOTICE_UNAVAILABLE: &str =
    "Sorry, I could not answer this time: the AI service is unavailable. Please try again later.";
const NOTICE_ENCRYPTED: &str = "This room is end-to-end encrypted, so I cannot read its \
     messages. To chat with me, start a chat without encryption.";
const NOTICE_TOO_FAST: &str =
    "You are asking faster than I can answer. Please wait a moment and ask again.";

/// Registers the configured bots, brings their profiles in line with the
/// config and starts them. No bots configured: nothing runs.
pub async fn start(services: &Arc<Services>) -> Result<()> {
    let config = &services.config.ai;
    if config.bots.is_empty() {
        return Ok(());
    }
    let llm = Arc::new(Llm::new(config)?);
    let all_bots: Arc<HashSet<OwnedUserId>> = Arc::new(
        config
            .bots
            .iter()
            .filter_map(|b| {
                UserId::parse_with_server_name(b.localpart.as_str(), &services.config.server_name)
                    .ok()
            })
            .collect(),
    );
    for bot_config in &config.bots {
        let user = ensure_account(services, bot_config).await?;
        tracing::info!(bot = %user, model = %bot_config.model, "AI bot started");
        let bot = Arc::new(Bot {
            user,
            config: bot_config.clone(),
            settings: config.clone(),
            llm: llm.clone(),
            all_bots: all_bots.clone(),
            slots: Arc::new(Semaphore::new(config.max_concurrent_per_bot)),
            user_slots: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            told_encrypted: Mutex::new(HashSet::new()),
        });
        let start = services.db.visible_count();
        tokio::spawn(bot.watch_rooms(Arc::downgrade(services), start));
    }
    Ok(())
}

/// Whether `user` is one of the configured bots. Rooms created with a bot
/// invited are created unencrypted: the bot could not read them otherwise.
pub fn is_bot(config: &crate::config::Config, user: &UserId) -> bool {
    user.server_name() == config.server_name
        && config
            .ai
            .bots
            .iter()
            .any(|b| b.localpart == user.localpart())
}

/// The bot's account, created if missing; its display name follows the config.
async fn ensure_account(s: &Arc<Services>, bot: &BotConfig) -> Result<OwnedUserId> {
    let user = crate::auth::check_new_localpart(&bot.localpart, &s.config.server_name)?;
    match s.users.account(&user)? {
        None => {
            s.auth.create_user_admin(&bot.localpart, None).await?;
            tracing::info!(bot = %user, "AI bot account registered");
        }
        Some(account) if account.deactivated => {
            return Err(Error::internal(format!(
                "the AI bot account {user} is deactivated; choose another localpart"
            )));
        }
        // Bot accounts have no password: one with a password is a person's.
        Some(account) if account.password_hash.is_some() => {
            return Err(Error::internal(format!(
                "{user} is a user's account (it has a password); choose another localpart \
                 for the AI bot"
            )));
        }
        Some(_) => {}
    }
    if s.users.displayname(&user)?.as_deref() != Some(bot.display_name.as_str()) {
        s.users
            .set_profile_field(&user, "displayname", json!(bot.display_name))?;
        // Rooms show the name from the member event: renew it where the bot is.
        let profile = member_profile(s, &user)?;
        for room in s.rooms.joined_rooms(&user)? {
            if let Err(e) = s.rooms.join(&room, &user, None, profile.clone()).await {
                tracing::warn!(bot = %user, %room, error = %e, "cannot update the bot's name");
            }
        }
    }
    Ok(user)
}

fn member_profile(s: &Services, user: &UserId) -> Result<Map<String, Value>> {
    let mut profile = Map::new();
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = s.users.profile_field(user, field)? {
            profile.insert(field.into(), value);
        }
    }
    Ok(profile)
}

/// A per-user token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    last_notice: Option<Instant>,
}

#[derive(Debug)]
struct Bot {
    user: OwnedUserId,
    config: BotConfig,
    settings: AiConfig,
    llm: Arc<Llm>,
    /// Every configured bot: bots never answer each other.
    all_bots: Arc<HashSet<OwnedUserId>>,
    slots: Arc<Semaphore>,
    user_slots: Mutex<HashMap<OwnedUserId, Arc<Semaphore>>>,
    buckets: Mutex<HashMap<OwnedUserId, Bucket>>,
    /// Encrypted rooms already told that the bot cannot read them.
    told_encrypted: Mutex<HashSet<OwnedRoomId>>,
}

/// A room the bot is in, as its watcher follows it.
struct Followed {
    watch: Watch,
    /// Events up to this count were seen.
    read_upto: u64,
    /// Newly followed: read once more on the next pass, since its watch was
    /// registered after this pass took its position.
    recheck: bool,
}

/// What to do about a question.
enum Verdict {
    Answer,
    TooFast,
    Ignore,
}

impl Bot {
    /// Follows the bot's memberships and rooms until the server stops.
    async fn watch_rooms(self: Arc<Self>, services: Weak<Services>, start: u64) {
        let Some(s) = services.upgrade() else { return };
        let mut stopping = s.stopping.subscribe();
        let mut memberships =
            s.db.watch(USERIDROOMID_MEMBERSHIP, prefix(&(self.user.clone(),)));
        drop(s);
        let mut rooms: HashMap<OwnedRoomId, Followed> = HashMap::new();
        // Invites (room, count) the bot could not answer: not retried, a new invite is.
        let mut declined: HashSet<(OwnedRoomId, u64)> = HashSet::new();
        let mut membership_changed = true;
        loop {
            let Some(s) = services.upgrade() else { return };
            if *stopping.borrow() {
                return;
            }
            let mut dirty = Vec::new();
            for (room, followed) in &mut rooms {
                if followed.recheck || followed.watch.has_changed().unwrap_or(false) {
                    followed.watch.mark_unchanged();
                    followed.recheck = false;
                    dirty.push(room.clone());
                }
            }
            let upto = s.db.visible_count();
            let mut again = false;
            if membership_changed {
                memberships.mark_unchanged();
                match self
                    .update_rooms(&s, &mut rooms, &mut declined, start)
                    .await
                {
                    Ok(added) => again |= added,
                    Err(e) => {
                        tracing::warn!(bot = %self.user, error = %e, "cannot read the bot's rooms")
                    }
                }
            }
            for room in dirty {
                let Some(followed) = rooms.get_mut(&room) else {
                    continue;
                };
                let after = followed.read_upto;
                followed.read_upto = upto.max(after);
                if let Err(e) = self.read_room(&s, &room, after, upto).await {
                    tracing::warn!(bot = %self.user, %room, error = %e, "cannot read a room");
                }
            }
            drop(s);
            if again {
                membership_changed = false;
                continue;
            }
            // `changed()` consumes the change it reports: the room it came
            // from is marked for the next pass.
            let any_room = async {
                if rooms.is_empty() {
                    return std::future::pending::<OwnedRoomId>().await;
                }
                let (ids, changes): (Vec<_>, Vec<_>) = rooms
                    .iter_mut()
                    .map(|(id, f)| (id.clone(), Box::pin(f.watch.changed())))
                    .unzip();
                let (_, index, _) = futures_util::future::select_all(changes).await;
                ids[index].clone()
            };
            tokio::select! {
                changed = memberships.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    membership_changed = true;
                }
                room = any_room => {
                    if let Some(followed) = rooms.get_mut(&room) {
                        followed.recheck = true;
                    }
                    membership_changed = memberships.has_changed().unwrap_or(false);
                }
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Joins on invite (or declines), follows joined rooms and forgets left
    /// ones. True if a room was newly followed.
    async fn update_rooms(
        &self,
        s: &Arc<Services>,
        rooms: &mut HashMap<OwnedRoomId, Followed>,
        declined: &mut HashSet<(OwnedRoomId, u64)>,
        start: u64,
    ) -> Result<bool> {
        let mut added = false;
        let mut joined = HashSet::new();
        for (room, record) in s.rooms.memberships(&self.user)? {
            match record.membership.as_str() {
                "invite" if !declined.contains(&(room.clone(), record.count)) => {
                    let inviter = s.rooms.pdu(record.event)?.map(|p| p.sender().to_owned());
                    let allowed = !self.settings.local_users_only
                        || inviter.as_deref().is_some_and(|i| s.users.is_local(i));
                    let outcome = if allowed {
                        s.rooms
                            .join(&room, &self.user, None, member_profile(s, &self.user)?)
                            .await
                    } else {
                        s.rooms
                            .leave(&room, &self.user, Some("This bot answers local users only"))
                            .await
                    };
                    match outcome {
                        Ok(_) if allowed => {
                            tracing::info!(bot = %self.user, %room, "AI bot joined on invite");
                            joined.insert(room.clone());
                            rooms.insert(
                                room.clone(),
                                Followed {
                                    watch: self.room_watch(s, &room)?,
                                    // Questions asked between invite and join count.
                                    read_upto: record.count.max(start),
                                    recheck: true,
                                },
                            );
                            added = true;
                            self.tell_if_encrypted(s, &room).await;
                        }
                        Ok(_) => {
                            tracing::info!(bot = %self.user, %room, ?inviter, "AI bot declined a remote invite");
                        }
                        Err(e) => {
                            tracing::warn!(bot = %self.user, %room, error = %e, "AI bot cannot answer an invite");
                            declined.insert((room, record.count));
                        }
                    }
                }
                "join" => {
                    joined.insert(room.clone());
                    if !rooms.contains_key(&room) {
                        rooms.insert(
                            room.clone(),
                            Followed {
                                watch: self.room_watch(s, &room)?,
                                read_upto: start.max(record.began()),
                                recheck: true,
                            },
                        );
                        added = true;
                    }
                }
                _ => {}
            }
        }
        rooms.retain(|room, _| joined.contains(room));
        Ok(added)
    }

    fn room_watch(&self, s: &Services, room: &RoomId) -> Result<Watch> {
        let meta = s.rooms.require_meta(room)?;
        Ok(s.db.watch(
            crate::storage::SHORTROOMIDCOUNT_SHORTEVENTID,
            prefix(&(meta.short,)),
        ))
    }

    /// Looks at the room's events in (after, upto] and starts the answers.
    async fn read_room(
        self: &Arc<Self>,
        s: &Arc<Services>,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<()> {
        if upto <= after {
            return Ok(());
        }
        let slice =
            s.rooms
                .timeline_between(room, after, upto, MAX_EVENTS_PER_PASS, |pdu, _| {
                    Ok(!self.all_bots.contains(pdu.sender())
                        && matches!(
                            pdu.kind(),
                            TimelineEventType::RoomMessage
                                | TimelineEventType::RoomEncrypted
                                | TimelineEventType::RoomMember
                        ))
                })?;
        if slice.limited {
            tracing::warn!(bot = %self.user, %room, "more questions at once than the bot reads; older ones skipped");
        }
        if let Some((newest, meta)) = slice.events.last() {
            self.mark_read(s, room, newest, meta.count);
        }
        for (pdu, meta) in slice.events {
            if meta.redacted_by.is_some() {
                continue;
            }
            if *pdu.kind() == TimelineEventType::RoomMember {
                // Everyone else left: nobody to talk to.
                if self.members_besides_bot(s, room)? == 0 {
                    s.rooms.leave(room, &self.user, None).await?;
                    tracing::info!(bot = %self.user, %room, "AI bot left a room where it was alone");
                    return Ok(());
                }
                continue;
            }
            if *pdu.kind() == TimelineEventType::RoomEncrypted || is_encrypted(s, room)? {
                self.tell_if_encrypted(s, room).await;
                continue;
            }
            match self.verdict(s, room, &pdu)? {
                Verdict::Ignore => {}
                Verdict::TooFast => {
                    let content = notice(NOTICE_TOO_FAST, &pdu);
                    if let Err(e) = self.send(s, room, content).await {
                        tracing::warn!(bot = %self.user, %room, error = %e, "cannot send a notice");
                    }
                }
                Verdict::Answer => {
                    let bot = self.clone();
                    let weak = Arc::downgrade(s);
                    let (room, count) = (room.to_owned(), meta.count);
                    tokio::spawn(async move { bot.answer(weak, room, pdu, count).await });
                }
            }
        }
        Ok(())
    }

    /// The bot has read everything up to `event`: a read receipt people see,
    /// and no unread notifications piling up for an account nobody reads.
    fn mark_read(&self, s: &Services, room: &RoomId, event: &Pdu, count: u64) {
        let outcome = s.rooms.require_meta(room).and_then(|meta| {
            s.notifications
                .clear_read(&self.user, meta.short, count, None)?;
            s.receipts.set(
                meta.short,
                "m.read",
                &self.user,
                None,
                event.event_id.as_str(),
            )
        });
        if let Err(e) = outcome {
            tracing::debug!(bot = %self.user, %room, error = %e, "cannot mark the room read");
        }
    }

    /// Whether (and how) to answer a message.
    fn verdict(&self, s: &Services, room: &RoomId, pdu: &Pdu) -> Result<Verdict> {
        let sender = pdu.sender();
        if self.settings.local_users_only && !s.users.is_local(sender) {
            return Ok(Verdict::Ignore);
        }
        let content = pdu.parsed_content();
        if context::is_edit(content)
            || !context::is_text(content)
            || context::body_of(content).is_none()
        {
            return Ok(Verdict::Ignore);
        }
        if !(self.is_direct(s, room)? || self.is_addressed(s, content)?) {
            return Ok(Verdict::Ignore);
        }
        Ok(if self.take_token(sender) {
            Verdict::Answer
        } else if self.notice_due(sender) {
            Verdict::TooFast
        } else {
            Verdict::Ignore
        })
    }

    /// A room of the bot and one other member answers every message.
    fn is_direct(&self, s: &Services, room: &RoomId) -> Result<bool> {
        Ok(self.members_besides_bot(s, room)? <= 1)
    }

    /// Joined and invited members other than the bot.
    fn members_besides_bot(&self, s: &Services, room: &RoomId) -> Result<u64> {
        let summary = s.rooms.sync_summary(room, &self.user)?;
        let joined = summary["m.joined_member_count"].as_u64().unwrap_or(0);
        let invited = summary["m.invited_member_count"].as_u64().unwrap_or(0);
        let bot_in = s.rooms.is_joined(room, &self.user)?;
        Ok((joined + invited).saturating_sub(u64::from(bot_in)))
    }

    /// Mentioned (`m.mentions`, its name or id in the body) or replied to.
    fn is_addressed(&self, s: &Services, content: &Value) -> Result<bool> {
        let me = self.user.as_str();
        let mentioned = content
            .get("m.mentions")
            .and_then(|m| m.get("user_ids"))
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(me)));
        if mentioned {
            return Ok(true);
        }
        if let Some(body) = context::body_of(content) {
            let body = body.to_lowercase();
            if body.contains(&self.config.display_name.to_lowercase())
                || body.contains(&me.to_lowercase())
            {
                return Ok(true);
            }
        }
        let replied_to = content
            .get("m.relates_to")
            .and_then(|r| r.get("m.in_reply_to"))
            .and_then(|r| r.get("event_id"))
            .and_then(Value::as_str)
            .and_then(|id| OwnedEventId::try_from(id).ok());
        if let Some(id) = replied_to
            && let Some(parent) = s.rooms.pdu_by_id(&id)?
        {
            return Ok(parent.sender() == self.user);
        }
        Ok(false)
    }

    /// Takes one question from the user's bucket; false when it is empty.
    fn take_token(&self, user: &UserId) -> bool {
        let per_minute = f64::from(self.settings.user_questions_per_minute);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 4096 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(120));
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: per_minute,
            at: now,
            last_notice: None,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * per_minute / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(per_minute);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// At most one "too fast" notice per user and half minute.
    fn notice_due(&self, user: &UserId) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let Some(bucket) = buckets.get_mut(user) else {
            return false;
        };
        let due = bucket
            .last_notice
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(30));
        if due {
            bucket.last_notice = Some(now);
        }
        due
    }

    fn user_slots(&self, user: &UserId) -> Arc<Semaphore> {
        let mut slots = self.user_slots.lock();
        if slots.len() > 4096 {
            // Idle users: nobody else holds their semaphore.
            slots.retain(|_, sem| Arc::strong_count(sem) > 1);
        }
        slots
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_concurrent_per_user)))
            .clone()
    }

    /// Posts the encryption notice once per room.
    async fn tell_if_encrypted(&self, s: &Arc<Services>, room: &RoomId) {
        match is_encrypted(s, room) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(bot = %self.user, %room, error = %e, "cannot read the room's encryption");
                return;
            }
        }
        if !self.told_encrypted.lock().insert(room.to_owned()) {
            return;
        }
        let content = json!({ "msgtype": "m.notice", "body": NOTICE_ENCRYPTED });
        if let Err(e) = self.send(s, room, content).await {
            tracing::warn!(bot = %self.user, %room, error = %e, "cannot send the encryption notice");
        }
    }

    async fn send(&self, s: &Services, room: &RoomId, content: Value) -> Result<OwnedEventId> {
        s.rooms
            .append(
                room,
                &self.user,
                EventDraft::new(TimelineEventType::RoomMessage, content),
            )
            .await
    }

    /// One answer: waits for its slots, then streams the model's reply into
    /// the room. Never fails loudly: problems become a notice and a log line.
    async fn answer(
        self: Arc<Self>,
        services: Weak<Services>,
        room: OwnedRoomId,
        prompt: Arc<Pdu>,
        count: u64,
    ) {
        let user_slots = self.user_slots(prompt.sender());
        let Ok(_user_permit) = user_slots.acquire_owned().await else {
            return;
        };
        let Ok(_bot_permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let Some(s) = services.upgrade() else { return };
        // A question redacted while it waited is not answered.
        let redacted = s
            .rooms
            .short_event_id(&prompt.event_id)
            .ok()
            .flatten()
            .and_then(|short| s.rooms.event_meta(short).ok().flatten())
            .is_none_or(|meta| meta.redacted_by.is_some());
        if redacted {
            return;
        }
        let mut stopping = s.stopping.subscribe();
        let short_room = match s.rooms.require_meta(&room) {
            Ok(meta) => meta.short,
            Err(e) => {
                tracing::warn!(bot = %self.user, %room, error = %e, "cannot answer");
                return;
            }
        };
        let typing = keep_typing(Arc::downgrade(&s), short_room, self.user.clone());
        let outcome = tokio::select! {
            outcome = self.stream_answer(&s, &room, &prompt, count) => outcome,
            _ = stopping.wait_for(|stop| *stop) => Ok(()),
        };
        typing.abort();
        let _ = typing.await;
        if let Err(e) = s.typing.set(short_room, &self.user, None) {
            tracing::debug!(error = %e, "cannot stop typing");
        }
        if let Err(e) = outcome {
            tracing::warn!(bot = %self.user, %room, prompt = %prompt.event_id, error = %e, "AI bot cannot post its answer");
        }
    }

    async fn stream_answer(
        &self,
        s: &Arc<Services>,
        room: &RoomId,
        prompt: &Pdu,
        count: u64,
    ) -> Result<()> {
        let messages = self.context(s, room, count)?;
        let interval = Duration::from_millis(self.settings.edit_interval_ms);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.request_timeout_ms);
        let mut text = String::new();
        let mut reply: Option<OwnedEventId> = None;
        let mut shown = String::new();
        let mut last_sent = tokio::time::Instant::now();
        let mut failure: Option<LlmError> = None;
        let started = tokio::select! {
            started = self.llm.stream(&self.config.model, &messages) => started,
            _ = tokio::time::sleep_until(deadline) => Err(LlmError::Timeout),
        };
        let mut completion = match started {
            Ok(completion) => Some(completion),
            Err(e) => {
                failure = Some(e);
                None
            }
        };
        while let Some(stream) = completion.as_mut() {
            let edit_due = (reply.is_some() && text != shown).then_some(last_sent + interval);
            let piece = tokio::select! {
                piece = stream.next() => piece,
                _ = tokio::time::sleep_until(edit_due.unwrap_or(deadline)), if edit_due.is_some() => {
                    if let Some(original) = &reply {
                        self.send(s, room, edit(original, text.trim(), prompt, true)).await?;
                        shown.clone_from(&text);
                        last_sent = tokio::time::Instant::now();
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline) => Err(LlmError::Timeout),
            };
            match piece {
                Ok(Some(piece)) => {
                    text.push_str(&piece);
                    if text.len() > MAX_ANSWER_BYTES {
                        let mut end = MAX_ANSWER_BYTES;
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        text.truncate(end);
                        completion = None;
                    }
                    if reply.is_none() && !text.trim().is_empty() {
                        reply = Some(
                            self.send(s, room, first_message(text.trim(), prompt))
                                .await?,
                        );
                        shown.clone_from(&text);
                        last_sent = tokio::time::Instant::now();
                    }
                }
                Ok(None) => completion = None,
                Err(e) => {
                    failure = Some(e);
                    completion = None;
                }
            }
        }
        if let Some(original) = &reply {
            // The final edit, without the live marker, also when nothing changed.
            self.send(s, room, edit(original, text.trim(), prompt, false))
                .await?;
        }
        match (failure, reply) {
            (None, Some(_)) => Ok(()),
            (None, None) => {
                tracing::warn!(bot = %self.user, %room, "the model returned an empty answer");
                self.send(s, room, notice(NOTICE_UNAVAILABLE, prompt))
                    .await?;
                Ok(())
            }
            (Some(e), _) => {
                tracing::warn!(bot = %self.user, %room, prompt = %prompt.event_id, error = %e, "AI bot could not answer");
                self.send(s, room, notice(NOTICE_UNAVAILABLE, prompt))
                    .await?;
                Ok(())
            }
        }
    }

    /// The conversation sent to the model: the room's recent messages up to
    /// and including the question.
    fn context(&self, s: &Services, room: &RoomId, count: u64) -> Result<Vec<llm::ChatMessage>> {
        // Edits (a streamed answer has many) are applied, not read as
        // messages; notices take slots, so read some more than needed.
        let window = self.settings.context_messages.saturating_mul(2).min(1000);
        let slice = s
            .rooms
            .timeline_between(room, 0, count, window, |pdu, meta| {
                Ok(*pdu.kind() == TimelineEventType::RoomMessage
                    && meta.redacted_by.is_none()
                    && !context::is_edit(pdu.parsed_content()))
            })?;
        let mut history = Vec::with_capacity(slice.events.len());
        for (pdu, meta) in &slice.events {
            let content = match s.rooms.latest_edit(pdu, meta)? {
                Some(edit) => edit
                    .parsed_content()
                    .get("m.new_content")
                    .cloned()
                    .unwrap_or_else(|| pdu.content_value()),
                None => pdu.content_value(),
            };
            history.push(TimelineMessage {
                event_id: pdu.event_id.clone(),
                sender: pdu.sender().to_owned(),
                content,
                redacted: false,
            });
        }
        let group = !self.is_direct(s, room)?;
        let names = names_of(s, room, &history);
        let name = |user: &UserId| {
            names
                .get(user)
                .cloned()
                .unwrap_or_else(|| user.localpart().to_owned())
        };
        Ok(context::build(
            &self.config.system_prompt,
            &self.user,
            group,
            &history,
            self.settings.context_messages,
            self.settings.context_max_chars,
            &name,
        ))
    }
}

/// Shows the bot typing until the returned task is aborted.
fn keep_typing(
    services: Weak<Services>,
    short_room: u64,
    user: OwnedUserId,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Some(s) = services.upgrade() else { return };
            if let Err(e) = s.typing.set(short_room, &user, Some(TYPING)) {
                tracing::debug!(error = %e, "cannot show typing");
            }
            drop(s);
            tokio::time::sleep(TYPING / 2).await;
        }
    })
}

/// Display names of the senders in `history` (their current member events).
fn names_of(
    s: &Services,
    room: &RoomId,
    history: &[TimelineMessage],
) -> HashMap<OwnedUserId, String> {
    let mut names = HashMap::new();
    for message in history {
        if names.contains_key(&message.sender) {
            continue;
        }
        let name = s
            .rooms
            .current_state_content(room, "m.room.member", message.sender.as_str())
            .ok()
            .flatten()
            .and_then(|c| {
                c.get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| message.sender.localpart().to_owned());
        names.insert(message.sender.clone(), name);
    }
    names
}

fn is_encrypted(s: &Services, room: &RoomId) -> Result<bool> {
    Ok(s.rooms
        .current_state_content(room, "m.room.encryption", "")?
        .is_some())
}

/// `m.relates_to` of an answer: a reply to the question, in its thread if it
/// has one.
fn reply_relation(prompt: &Pdu) -> Value {
    let in_reply_to = json!({ "event_id": prompt.event_id });
    match crate::rooms::thread_root_of(prompt) {
        Some(root) => json!({
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": false,
            "m.in_reply_to": in_reply_to,
        }),
        None => json!({ "m.in_reply_to": in_reply_to }),
    }
}

fn first_message(text: &str, prompt: &Pdu) -> Value {
    json!({
        "msgtype": "m.text",
        "body": text,
        "m.relates_to": reply_relation(prompt),
        "m.mentions": { "user_ids": [prompt.sender()] },
        LIVE: {},
    })
}

/// An edit of the answer. The asker stays mentioned in the new content; the
/// edit itself mentions nobody new (and `.m.rule.suppress_edits` keeps it
/// from notifying anyway).
fn edit(original: &OwnedEventId, text: &str, prompt: &Pdu, live: bool) -> Value {
    let mut new_content = json!({
        "msgtype": "m.text",
        "body": text,
        "m.mentions": { "user_ids": [prompt.sender()] },
    });
    let mut content = json!({
        "msgtype": "m.text",
        "body": format!("* {text}"),
        "m.new_content": new_content.clone(),
        "m.mentions": {},
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    });
    if live {
        new_content[LIVE] = json!({});
        content["m.new_content"] = new_content;
        content[LIVE] = json!({});
    }
    content
}

fn notice(text: &str, prompt: &Pdu) -> Value {
    json!({
        "msgtype": "m.notice",
        "body": text,
        "m.relates_to": reply_relation(prompt),
    })
}
