//! Delivery to push gateways (the Push Gateway API, as Sygnal speaks it).
//!
//! The courier of pusher queues: for each queued item it builds the
//! notification from the event as it is now (skipping ones the user has read
//! meanwhile or that were redacted), with the badge counted at send time, and
//! POSTs it to the pusher's URL. A gateway that is down, overloaded (429) or
//! failing (5xx) is retried by the outbox; any other refusal (4xx) drops that
//! notification. Pushkeys the gateway lists as `rejected` lose their pusher.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::future::BoxFuture;
use ruma::{
    UserId,
    api::client::push::PusherKind,
    push::{Action, PushFormat},
};
use serde_json::{Map, Value, json};

use super::{PushItem, pushers::PusherRecord};
use crate::{
    Services,
    outbox::{Courier, Delivery, Destination, Item, Then},
    rooms::Pdu,
    util::now_ms,
};

/// Delivers pusher queues.
pub struct Gateway {
    services: Weak<Services>,
    http: reqwest::Client,
}

impl Gateway {
    pub fn new(services: &Arc<Services>) -> crate::error::Result<Self> {
        let timeout = Duration::from_millis(services.config.push.gateway_timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("bigd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::error::Error::internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            services: Arc::downgrade(services),
            http,
        })
    }
}

impl Courier for Gateway {
    fn deliver<'a>(&'a self, to: &'a Destination, items: &'a [Item]) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let Destination::Pusher {
                user,
                app_id,
                pushkey,
            } = to
            else {
                return Delivery {
                    done: items.len(),
                    then: Then::Gone,
                };
            };
            let Some(s) = self.services.upgrade() else {
                return retry(0, "the server is stopping");
            };
            let pusher = match s.push.pushers.get(user, app_id, pushkey) {
                Ok(Some(pusher)) => pusher,
                Ok(None) => return gone(items),
                Err(e) => return retry(0, &e.to_string()),
            };
            let Some(url) = pusher.url().map(ToOwned::to_owned) else {
                return gone(items);
            };
            for (i, item) in items.iter().enumerate() {
                let later = i + 1 < items.len();
                let body = match self.notification_for(&s, user, &pusher, item, later) {
                    Ok(Some(body)) => body,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, %user, "cannot build a push notification; dropping it");
                        continue;
                    }
                };
                match self.post(&url, &body).await {
                    Sent::Accepted { rejected } => {
                        if rejected.iter().any(|k| k == pushkey) {
                            tracing::info!(%user, app_id, "the push gateway rejected the pushkey; removing the pusher");
                            if let Err(e) = s.push.pushers.delete(user, app_id, pushkey) {
                                tracing::error!(error = %e, "cannot remove a rejected pusher");
                            }
                            return gone(items);
                        }
                    }
                    Sent::Refused(reason) => {
                        tracing::warn!(%user, app_id, %reason, "the push gateway refused a notification; dropping it");
                    }
                    Sent::Failed(reason) => return retry(i, &reason),
                }
            }
            Delivery {
                done: items.len(),
                then: Then::Continue,
            }
        })
    }
}

/// What became of one POST.
enum Sent {
    Accepted {
        rejected: Vec<String>,
    },
    /// Refused for good (a 4xx other than 429).
    Refused(String),
    /// Worth retrying.
    Failed(String),
}

/// Most bytes of a gateway's answer read: it only carries `rejected`.
const MAX_ANSWER: usize = 64 * 1024;

async fn read_bounded(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return None;
        }
    }
    Some(body)
}

fn retry(done: usize, reason: &str) -> Delivery {
    Delivery {
        done,
        then: Then::Retry(reason.to_owned()),
    }
}

fn gone(items: &[Item]) -> Delivery {
    Delivery {
        done: items.len(),
        then: Then::Gone,
    }
}

impl Gateway {
    async fn post(&self, url: &str, body: &Value) -> Sent {
        let response = match self.http.post(url).json(body).send().await {
            Ok(response) => response,
            Err(e) => return Sent::Failed(format!("cannot reach {url}: {e}")),
        };
        let status = response.status();
        if status.is_success() {
            // A gateway that answers 200 without a (readable) body rejected nothing.
            let rejected = read_bounded(response)
                .await
                .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
                .and_then(|v| serde_json::from_value(v["rejected"].clone()).ok())
                .unwrap_or_default();
            return Sent::Accepted { rejected };
        }
        let reason = format!("{url} answered {status}");
        if status.as_u16() == 429 || status.is_server_error() {
            Sent::Failed(reason)
        } else {
            Sent::Refused(reason)
        }
    }

    /// The request body for one queued item, or `None` when there is nothing
    /// to send (read meanwhile, superseded, too old, the event is gone).
    fn notification_for(
        &self,
        s: &Services,
        user: &UserId,
        pusher: &PusherRecord,
        item: &Item,
        superseded: bool,
    ) -> crate::error::Result<Option<Value>> {
        let max_age = s.config.push.max_notification_age_ms;
        if now_ms().saturating_sub(item.queued_at) > max_age {
            return Ok(None);
        }
        let push_item: PushItem = serde_json::from_str(item.payload.get())?;
        // Counted when sending, and only for what is sent.
        let badge = || {
            s.notifications
                .badge(&s.rooms, user, s.config.push.group_unread_count_by_room)
        };
        let notification = match push_item {
            // A later item carries newer counts anyway.
            PushItem::Badge if superseded => return Ok(None),
            PushItem::Badge => json!({
                "counts": { "unread": badge()? },
                "devices": [device_json(pusher, &[])],
            }),
            PushItem::Event {
                event_id,
                room_id,
                short_room,
                count,
                actions,
                counted,
            } => {
                let still_news = if counted {
                    s.notifications.is_unread(user, short_room, count)?
                } else {
                    s.rooms.membership(&room_id, user)?.as_deref() == Some("invite")
                };
                if !still_news {
                    return Ok(None);
                }
                let Some(pdu) = s.rooms.pdu_by_id(&event_id)? else {
                    return Ok(None);
                };
                if is_redacted(s, &event_id)? {
                    return Ok(None);
                }
                let device = device_json(pusher, &actions);
                let prio = if is_urgent(&pdu, &actions) {
                    "high"
                } else {
                    "low"
                };
                let mut n = json!({
                    "event_id": event_id,
                    "room_id": room_id,
                    "prio": prio,
                    "counts": { "unread": badge()? },
                    "devices": [device],
                });
                if !event_id_only(pusher) {
                    self.describe(s, &mut n, user, &room_id, &pdu)?;
                }
                n
            }
        };
        Ok(Some(json!({ "notification": notification })))
    }

    /// The full format's fields: who, what, where.
    fn describe(
        &self,
        s: &Services,
        n: &mut Value,
        user: &UserId,
        room: &ruma::RoomId,
        pdu: &Pdu,
    ) -> crate::error::Result<()> {
        let sender = pdu.sender();
        n["type"] = json!(pdu.kind().to_string());
        n["sender"] = json!(sender);
        if let Some(name) = s
            .rooms
            .current_state_content(room, "m.room.member", sender.as_str())?
            .and_then(|c| c["displayname"].as_str().map(ToOwned::to_owned))
        {
            n["sender_display_name"] = json!(name);
        }
        if let Some(name) = s
            .rooms
            .current_state_content(room, "m.room.name", "")?
            .and_then(|c| c["name"].as_str().map(ToOwned::to_owned))
            .filter(|name| !name.is_empty())
        {
            n["room_name"] = json!(name);
        }
        if let Some(alias) = s
            .rooms
            .current_state_content(room, "m.room.canonical_alias", "")?
            .and_then(|c| c["alias"].as_str().map(ToOwned::to_owned))
        {
            n["room_alias"] = json!(alias);
        }
        if let Some(key) = pdu.state_key() {
            n["user_is_target"] = json!(key == user.as_str());
            if let Some(membership) = pdu.content_str("membership") {
                n["membership"] = json!(membership);
            }
        }
        n["content"] = pdu.content_value();
        Ok(())
    }
}

fn is_redacted(s: &Services, event: &ruma::EventId) -> crate::error::Result<bool> {
    let Some(short) = s.rooms.short_event_id(event)? else {
        return Ok(true);
    };
    Ok(s.rooms
        .event_meta(short)?
        .is_none_or(|meta| meta.redacted_by.is_some()))
}

/// High priority (wake the phone now) for what rings or highlights, and for
/// encrypted events, whose importance the server cannot judge.
fn is_urgent(pdu: &Pdu, actions: &[Action]) -> bool {
    let rings = actions
        .iter()
        .any(|a| matches!(a, Action::SetTweak(ruma::push::Tweak::Sound(_))));
    rings
        || actions.iter().any(|a| a.is_highlight())
        || pdu.kind().to_string() == "m.room.encrypted"
}

fn event_id_only(pusher: &PusherRecord) -> bool {
    matches!(&pusher.pusher.kind, PusherKind::Http(data) if data.format == Some(PushFormat::EventIdOnly))
}

/// The `devices` entry: the pusher's ids, its data without the URL (as
/// Sygnal expects) and the tweaks of the rule that matched.
fn device_json(pusher: &PusherRecord, actions: &[Action]) -> Value {
    let mut data = Map::new();
    if let PusherKind::Http(http) = &pusher.pusher.kind {
        if let Some(format) = &http.format {
            data.insert("format".into(), json!(format.as_str()));
        }
        for (k, v) in &http.data {
            data.insert(k.clone(), v.clone());
        }
    }
    let mut tweaks = Map::new();
    for action in actions {
        if let Action::SetTweak(tweak) = action
            && let Ok(Value::Object(t)) = serde_json::to_value(tweak)
            && let Some(Value::String(name)) = t.get("set_tweak")
        {
            // `{"set_tweak": "highlight"}` without a value means true.
            let value = t.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(name.clone(), value);
        }
    }
    json!({
        "app_id": pusher.pusher.ids.app_id,
        "pushkey": pusher.pusher.ids.pushkey,
        "pushkey_ts": pusher.created_ms / 1000,
        "data": data,
        "tweaks": tweaks,
    })
}
