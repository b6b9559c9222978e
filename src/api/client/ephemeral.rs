//! Typing notifications, receipts and read markers.

use axum::extract::State;
use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        typing::create_typing_event::{self, v3::Typing},
    },
    events::receipt::ReceiptThread,
};

use super::ensure_self;
use crate::{
    Services,
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

/// The room's short id, if the user is joined to it.
fn joined_short_room(s: &Services, room: &RoomId, user: &UserId) -> Result<u64> {
    let meta = s.rooms.require_meta(room)?;
    if !s.rooms.is_joined(room, user)? {
        return Err(Error::forbidden("You are not in this room"));
    }
    Ok(meta.short)
}

/// Receipts and markers may only point at events of the room the user may see.
fn ensure_event_in_room(
    s: &Services,
    room: &RoomId,
    event: &EventId,
    user: &UserId,
    device: &str,
) -> Result<()> {
    s.rooms.event_for(room, event, (user, device)).map(|_| ())
}

/// Reading up to an event clears the notifications before it.
fn clear_notifications(
    s: &Services,
    short_room: u64,
    user: &UserId,
    event: &EventId,
    thread: Option<&str>,
) -> Result<()> {
    let short = s
        .rooms
        .short_event_id(event)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let meta = s
        .rooms
        .event_meta(short)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    s.notifications
        .clear_read(user, short_room, meta.count, thread)
}

pub async fn typing(
    State(s): State<AppState>,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<RumaResponse<create_typing_event::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    ensure_self(&me.user_id, &b.user_id, "set the typing state")?;
    let short_room = joined_short_room(&s, &b.room_id, &me.user_id)?;
    let timeout = match &b.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    s.typing.set(short_room, &me.user_id, timeout)?;
    Ok(create_typing_event::v3::Response::new().into())
}

fn set_fully_read(s: &Services, room: &RoomId, user: &UserId, event: &EventId) -> Result<()> {
    let content = serde_json::value::to_raw_value(&serde_json::json!({ "event_id": event }))?;
    s.users
        .set_account_data(user, Some(room), "m.fully_read", content)
}

pub async fn receipt(
    State(s): State<AppState>,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<RumaResponse<create_receipt::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let short_room = joined_short_room(&s, &b.room_id, &me.user_id)?;
    ensure_event_in_room(
        &s,
        &b.room_id,
        &b.event_id,
        &me.user_id,
        me.device_id.as_str(),
    )?;
    let thread = match &b.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => Some(root.to_string()),
        _ => return Err(Error::invalid_param("Unknown thread_id")),
    };
    match &b.receipt_type {
        ReceiptType::FullyRead => {
            if thread.is_some() {
                return Err(Error::invalid_param("m.fully_read cannot be threaded"));
            }
            set_fully_read(&s, &b.room_id, &me.user_id, &b.event_id)?;
        }
        ReceiptType::Read | ReceiptType::ReadPrivate => {
            // Cleared first: the receipt's write is what wakes syncs, and
            // they must then read the lowered counts.
            clear_notifications(&s, short_room, &me.user_id, &b.event_id, thread.as_deref())?;
            s.receipts.set(
                short_room,
                b.receipt_type.as_str(),
                &me.user_id,
                thread.as_deref(),
                b.event_id.as_str(),
            )?;
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {other}"
            )));
        }
    }
    Ok(create_receipt::v3::Response::new().into())
}

pub async fn read_markers(
    State(s): State<AppState>,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<RumaResponse<set_read_marker::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let short_room = joined_short_room(&s, &b.room_id, &me.user_id)?;
    let device = me.device_id.as_str();
    if let Some(event) = &b.fully_read {
        ensure_event_in_room(&s, &b.room_id, event, &me.user_id, device)?;
        set_fully_read(&s, &b.room_id, &me.user_id, event)?;
    }
    for (kind, event) in [
        ("m.read", &b.read_receipt),
        ("m.read.private", &b.private_read_receipt),
    ] {
        if let Some(event) = event {
            ensure_event_in_room(&s, &b.room_id, event, &me.user_id, device)?;
            s.receipts
                .set(short_room, kind, &me.user_id, None, event.as_str())?;
            clear_notifications(&s, short_room, &me.user_id, event, None)?;
        }
    }
    Ok(set_read_marker::v3::Response::new().into())
}
