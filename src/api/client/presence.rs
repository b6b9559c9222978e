//! `PUT/GET /presence/{userId}/status`.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

fn disabled() -> Error {
    Error::forbidden("Presence is disabled on this server")
}

pub async fn set(
    State(s): State<AppState>,
    req: Ruma<set_presence::v3::Request>,
) -> Result<RumaResponse<set_presence::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    ensure_self(&me.user_id, &b.user_id, "set the presence")?;
    if !s.presence.enabled() {
        return Err(disabled());
    }
    s.presence
        .set(&me.user_id, b.presence.as_str(), b.status_msg.clone())?;
    Ok(set_presence::v3::Response::new().into())
}

/// Presence is visible to the user and to those who share a room with them.
pub async fn get(
    State(s): State<AppState>,
    req: Ruma<get_presence::v3::Request>,
) -> Result<RumaResponse<get_presence::v3::Response>> {
    let me = req.identity()?;
    let user = &req.body.user_id;
    if !s.presence.enabled() {
        return Err(disabled());
    }
    if s.users.is_local(user) && s.users.account(user)?.is_none() {
        return Err(Error::not_found("No such user"));
    }
    let mine = s.rooms.joined_rooms(&me.user_id)?;
    let shares_a_room =
        user == &me.user_id || s.rooms.joined_rooms(user)?.iter().any(|r| mine.contains(r));
    if !shares_a_room {
        return Err(Error::forbidden("You do not share a room with this user"));
    }
    let content = s
        .presence
        .content(user)?
        .unwrap_or_else(|| serde_json::json!({ "presence": "offline" }));
    let state = PresenceState::from(content["presence"].as_str().unwrap_or("offline"));
    let mut response = get_presence::v3::Response::new(state);
    response.status_msg = content["status_msg"].as_str().map(str::to_owned);
    response.currently_active = content["currently_active"].as_bool();
    response.last_active_ago = content["last_active_ago"]
        .as_u64()
        .map(Duration::from_millis);
    Ok(response.into())
}
