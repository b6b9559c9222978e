use axum::extract::State;
use http::StatusCode;
use ruma::{
    RoomId, UserId,
    api::{
        client::config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        error::ErrorKind,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

/// Types the server maintains itself; clients use their dedicated endpoints.
const SERVER_CONTROLLED: &[&str] = &["m.fully_read", "m.push_rules"];

fn check_settable(kind: &str, content: &RawValue) -> Result<()> {
    if SERVER_CONTROLLED.contains(&kind) {
        return Err(Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadJson,
            format!("Cannot set {kind} through this API"),
        ));
    }
    if !content.get().trim_start().starts_with('{') {
        return Err(Error::bad_json(
            "Account data content must be a JSON object",
        ));
    }
    Ok(())
}

fn get(
    s: &AppState,
    caller: &UserId,
    user: &UserId,
    room: Option<&RoomId>,
    kind: &str,
) -> Result<Box<RawValue>> {
    ensure_self(caller, user, "read the account data")?;
    s.users
        .account_data(user, room, kind)?
        .ok_or_else(|| Error::not_found(format!("No account data of type {kind}")))
}

fn set(
    s: &AppState,
    caller: &UserId,
    user: &UserId,
    room: Option<&RoomId>,
    kind: &str,
    content: &RawValue,
) -> Result<()> {
    ensure_self(caller, user, "change the account data")?;
    check_settable(kind, content)?;
    s.users
        .set_account_data(user, room, kind, content.to_owned())
}

pub async fn set_global(
    State(s): State<AppState>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<RumaResponse<set_global_account_data::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    set(
        &s,
        &me.user_id,
        &b.user_id,
        None,
        &b.event_type.to_string(),
        b.data.json(),
    )?;
    Ok(set_global_account_data::v3::Response::new().into())
}

pub async fn get_global(
    State(s): State<AppState>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<RumaResponse<get_global_account_data::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let content = get(&s, &me.user_id, &b.user_id, None, &b.event_type.to_string())?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(content)).into())
}

pub async fn set_room(
    State(s): State<AppState>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<RumaResponse<set_room_account_data::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    set(
        &s,
        &me.user_id,
        &b.user_id,
        Some(&b.room_id),
        &b.event_type.to_string(),
        b.data.json(),
    )?;
    Ok(set_room_account_data::v3::Response::new().into())
}

pub async fn get_room(
    State(s): State<AppState>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<RumaResponse<get_room_account_data::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let content = get(
        &s,
        &me.user_id,
        &b.user_id,
        Some(&b.room_id),
        &b.event_type.to_string(),
    )?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(content)).into())
}
