//! Rooms: creation, state, sending, reading events and members.

use axum::extract::State;
use http::StatusCode;
use ruma::{
    OwnedRoomAliasId, RoomAliasId, UInt,
    api::{
        Direction as ApiDirection,
        client::{
            membership::{get_member_events, joined_members, joined_rooms},
            message::{get_message_events, send_message_event},
            room::{
                Visibility,
                create_room::{self, v3::RoomPreset},
                get_room_event,
            },
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
        error::ErrorKind,
    },
    serde::Raw,
};
use serde_json::{Map, Value};

use crate::{
    api::{
        AppState,
        client::discovery::{DEFAULT_ROOM_VERSION, ROOM_VERSIONS},
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
    rooms::{CreateRoom, Direction, EventDraft, Preset},
};

fn json_object(raw: &serde_json::value::RawValue, what: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(raw.get())
        .map_err(|_| Error::bad_json(format!("{what} must be a JSON object")))
}

fn raw_values(values: Vec<Value>) -> Result<Vec<Raw<ruma::events::AnyStateEvent>>> {
    values
        .into_iter()
        .map(|v| Ok(Raw::from_json(serde_json::value::to_raw_value(&v)?)))
        .collect()
}

/// displayname and avatar_url for a member event.
pub(super) fn member_profile(s: &AppState, user: &ruma::UserId) -> Result<Map<String, Value>> {
    let mut profile = Map::new();
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = s.users.profile_field(user, field)? {
            profile.insert(field.into(), value);
        }
    }
    Ok(profile)
}

pub async fn create(
    State(s): State<AppState>,
    req: Ruma<create_room::v3::Request>,
) -> Result<RumaResponse<create_room::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    let version = body.room_version.unwrap_or(DEFAULT_ROOM_VERSION);
    if !ROOM_VERSIONS.contains(&version) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version} is not supported; use one of 10, 11, 12"),
        ));
    }
    let preset = match body.preset {
        Some(RoomPreset::PublicChat) => Preset::PublicChat,
        Some(RoomPreset::TrustedPrivateChat) => Preset::TrustedPrivateChat,
        Some(RoomPreset::PrivateChat) => Preset::PrivateChat,
        Some(other) => return Err(Error::invalid_param(format!("Unknown preset {other}"))),
        None if body.visibility == Visibility::Public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let mut creation_content = match &body.creation_content {
        Some(raw) => json_object(raw.json(), "creation_content")?,
        None => Map::new(),
    };
    creation_content.remove("room_version");
    creation_content.remove("creator");
    let power_level_override = match &body.power_level_content_override {
        Some(raw) => Some(json_object(raw.json(), "power_level_content_override")?),
        None => None,
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = json_object(raw.json(), "an initial_state event")?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state events need a type"))?;
        if kind == "m.room.create" || kind == "m.room.member" {
            return Err(Error::invalid_param(format!(
                "initial_state cannot contain {kind}"
            )));
        }
        let key = event
            .get("state_key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = event
            .get("content")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        initial_state.push((kind.to_owned(), key.to_owned(), content));
    }
    for invitee in &body.invite {
        if !s.users.is_local(invitee) {
            return Err(Error::forbidden(format!(
                "Cannot invite {invitee}: federation is not enabled on this server"
            )));
        }
        if !s.users.is_active(invitee)? {
            return Err(Error::not_found(format!("{invitee} does not exist")));
        }
    }
    if body.invite.iter().any(|u| crate::ai::is_bot(&s.config, u)) {
        initial_state.retain(|(kind, _, _)| kind != "m.room.encryption");
    }
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = OwnedRoomAliasId::try_from(format!("#{name}:{}", s.config.server_name))
                .map_err(|e| Error::invalid_param(format!("Invalid room_alias_name: {e}")))?;
            if s.rooms.resolve_alias(&alias)?.is_some() {
                return Err(Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::RoomInUse,
                    format!("The alias {alias} is taken"),
                ));
            }
            Some(alias)
        }
        None => None,
    };
    let request = CreateRoom {
        version,
        preset,
        creation_content,
        power_level_override,
        initial_state,
        name: body.name,
        topic: body.topic,
        canonical_alias: alias.clone(),
        invite: body.invite,
        is_direct: body.is_direct,
    };
    let profile = member_profile(&s, &me.user_id)?;
    let room = s.rooms.create_room(&me.user_id, profile, request).await?;
    if let Some(alias) = alias {
        s.rooms.set_alias(&alias, &room, &me.user_id)?;
    }
    if body.visibility == Visibility::Public {
        s.rooms.set_published(&room, &me.user_id, true)?;
    }
    Ok(create_room::v3::Response::new(room).into())
}

pub async fn joined(
    State(s): State<AppState>,
    req: Ruma<joined_rooms::v3::Request>,
) -> Result<RumaResponse<joined_rooms::v3::Response>> {
    let me = req.identity()?;
    Ok(joined_rooms::v3::Response::new(s.rooms.joined_rooms(&me.user_id)?).into())
}

pub async fn send_message(
    State(s): State<AppState>,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<RumaResponse<send_message_event::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    let content: Value = serde_json::from_str(body.body.json().get())?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    let mut draft = EventDraft::new(body.event_type.to_string(), content);
    draft.txn = Some((me.device_id.to_string(), body.txn_id.to_string()));
    let event_id = s.rooms.append(&body.room_id, &me.user_id, draft).await?;
    Ok(send_message_event::v3::Response::new(event_id).into())
}

pub async fn send_state(
    State(s): State<AppState>,
    req: Ruma<send_state_event::v3::Request>,
) -> Result<RumaResponse<send_state_event::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    let content: Value = serde_json::from_str(body.body.json().get())?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    let kind = body.event_type.to_string();
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(&s, &body.room_id, &content)?;
    }
    let draft = EventDraft::state(kind, body.state_key, content);
    let event_id = s.rooms.append(&body.room_id, &me.user_id, draft).await?;
    Ok(send_state_event::v3::Response::new(event_id).into())
}

/// The spec: a canonical alias (and its alt_aliases) must point to this room.
fn check_canonical_alias(s: &AppState, room: &ruma::RoomId, content: &Value) -> Result<()> {
    let mut aliases: Vec<&str> = content
        .get("alias")
        .and_then(Value::as_str)
        .into_iter()
        .collect();
    if let Some(alt) = content.get("alt_aliases") {
        let alt = alt
            .as_array()
            .ok_or_else(|| Error::bad_json("alt_aliases must be a list"))?;
        aliases.extend(alt.iter().filter_map(Value::as_str));
    }
    for alias in aliases {
        let alias = <&RoomAliasId>::try_from(alias).map_err(|e| {
            Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::InvalidParam,
                format!("Invalid alias {alias}: {e}"),
            )
        })?;
        if s.rooms.resolve_alias(alias)?.as_deref() != Some(room) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadAlias,
                format!("The alias {alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

pub async fn get_event(
    State(s): State<AppState>,
    req: Ruma<get_room_event::v3::Request>,
) -> Result<RumaResponse<get_room_event::v3::Response>> {
    let me = req.identity()?;
    let event = s.rooms.event_for(
        &req.body.room_id,
        &req.body.event_id,
        (&me.user_id, me.device_id.as_str()),
    )?;
    Ok(
        get_room_event::v3::Response::new(Raw::from_json(serde_json::value::to_raw_value(&event)?))
            .into(),
    )
}

/// Written as JSON directly: the events come serialised from their cache, so
/// no page is parsed or re-serialised on its way out.
pub async fn messages(
    State(s): State<AppState>,
    req: Ruma<get_message_events::v3::Request>,
) -> Result<impl axum::response::IntoResponse> {
    let me = req.identity()?;
    let body = &req.body;
    let dir = match body.dir {
        ApiDirection::Backward => Direction::Backward,
        ApiDirection::Forward => Direction::Forward,
    };
    let filter = super::search::event_filter(&body.filter);
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(1000);
    let page = s.rooms.messages(
        &body.room_id,
        (&me.user_id, me.device_id.as_str()),
        body.from.as_deref(),
        body.to.as_deref(),
        dir,
        limit,
        &filter,
    )?;
    let size = page.chunk.iter().map(|e| e.len() + 1).sum::<usize>() + 256;
    let mut out = String::with_capacity(size);
    out.push_str("{\"chunk\":[");
    out.push_str(&page.chunk.join(","));
    out.push_str("],\"start\":");
    out.push_str(&serde_json::to_string(&page.start)?);
    if let Some(end) = &page.end {
        out.push_str(",\"end\":");
        out.push_str(&serde_json::to_string(end)?);
    }
    if !page.state.is_empty() {
        out.push_str(",\"state\":");
        out.push_str(&serde_json::to_string(&page.state)?);
    }
    out.push('}');
    Ok(([(http::header::CONTENT_TYPE, "application/json")], out))
}

pub async fn state(
    State(s): State<AppState>,
    req: Ruma<get_state_events::v3::Request>,
) -> Result<RumaResponse<get_state_events::v3::Response>> {
    let me = req.identity()?;
    let events = s.rooms.state_events_for(&req.body.room_id, &me.user_id)?;
    Ok(get_state_events::v3::Response::new(raw_values(events)?).into())
}

pub async fn state_event(
    State(s): State<AppState>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<RumaResponse<get_state_event_for_key::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let content = s.rooms.state_content_for(
        &b.room_id,
        &me.user_id,
        &b.event_type.to_string(),
        &b.state_key,
    )?;
    let value = match b.format {
        get_state_event_for_key::v3::StateEventFormat::Event => {
            let state = s.rooms.state_events_for(&b.room_id, &me.user_id)?;
            let kind = b.event_type.to_string();
            state
                .into_iter()
                .find(|e| e["type"] == kind.as_str() && e["state_key"] == b.state_key.as_str())
                .unwrap_or(content)
        }
        _ => content,
    };
    Ok(get_state_event_for_key::v3::Response::new(serde_json::value::to_raw_value(&value)?).into())
}

pub async fn members(
    State(s): State<AppState>,
    req: Ruma<get_member_events::v3::Request>,
) -> Result<RumaResponse<get_member_events::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let membership = b.membership.as_ref().map(|m| m.to_string());
    let not_membership = b.not_membership.as_ref().map(|m| m.to_string());
    let events = s.rooms.members_for(
        &b.room_id,
        &me.user_id,
        b.at.as_deref(),
        membership.as_deref(),
        not_membership.as_deref(),
    )?;
    let chunk = events
        .into_iter()
        .map(|v| Ok(Raw::from_json(serde_json::value::to_raw_value(&v)?)))
        .collect::<Result<_>>()?;
    Ok(get_member_events::v3::Response::new(chunk).into())
}

pub async fn joined_members(
    State(s): State<AppState>,
    req: Ruma<joined_members::v3::Request>,
) -> Result<RumaResponse<joined_members::v3::Response>> {
    let me = req.identity()?;
    let mut joined = std::collections::BTreeMap::new();
    for (user, info) in s.rooms.joined_members_for(&req.body.room_id, &me.user_id)? {
        let member: joined_members::v3::RoomMember = serde_json::from_value(info)?;
        joined.insert(user, member);
    }
    Ok(joined_members::v3::Response::new(joined).into())
}

/// `limit` for the directory: at most 500 a page.
pub(super) fn page_limit(limit: Option<UInt>) -> usize {
    limit
        .map_or(100, |l| usize::try_from(u64::from(l)).unwrap_or(500))
        .clamp(1, 500)
}

pub async fn redact(
    State(s): State<AppState>,
    req: Ruma<ruma::api::client::redact::redact_event::v3::Request>,
) -> Result<RumaResponse<ruma::api::client::redact::redact_event::v3::Response>> {
    let me = req.identity()?.clone();
    let b = req.body;
    let event_id = s
        .rooms
        .redact(
            &b.room_id,
            &me.user_id,
            &b.event_id,
            b.reason.as_deref(),
            (me.device_id.to_string(), b.txn_id.to_string()),
        )
        .await?;
    Ok(ruma::api::client::redact::redact_event::v3::Response::new(event_id).into())
}

pub async fn upgrade(
    State(s): State<AppState>,
    req: Ruma<ruma::api::client::room::upgrade_room::v3::Request>,
) -> Result<RumaResponse<ruma::api::client::room::upgrade_room::v3::Response>> {
    let me = req.identity()?.clone();
    let b = req.body;
    if !ROOM_VERSIONS.contains(&b.new_version) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!(
                "Room version {} is not supported; use one of 10, 11, 12",
                b.new_version
            ),
        ));
    }
    let profile = member_profile(&s, &me.user_id)?;
    let new_room = s
        .rooms
        .upgrade(&b.room_id, &me.user_id, b.new_version, profile)
        .await?;
    Ok(ruma::api::client::room::upgrade_room::v3::Response::new(new_room).into())
}

/// MSC3266 room summary: for rooms the caller could join or peek into, or is
/// in. Served as the summary's JSON (the spec's shape) rather than re-shaped.
pub async fn summary(
    State(s): State<AppState>,
    req: Ruma<ruma::api::client::room::get_summary::v1::Request>,
) -> Result<axum::Json<Value>> {
    let b = &req.body;
    let target: &ruma::RoomOrAliasId = &b.room_id_or_alias;
    let not_found = || Error::not_found("Room not found, or you may not see it");
    let room = match <&ruma::RoomId>::try_from(target) {
        Ok(room) => room.to_owned(),
        Err(alias) => s.rooms.resolve_alias(alias)?.ok_or_else(not_found)?,
    };
    if !s.rooms.exists(&room)? {
        return Err(not_found());
    }
    let mut summary = s.rooms.summary(&room)?;
    let membership = match &req.identity {
        Some(me) => s.rooms.membership(&room, &me.user_id)?,
        None => None,
    };
    let peekable = summary["world_readable"] == true
        || matches!(
            summary["join_rule"].as_str(),
            Some("public" | "knock" | "knock_restricted" | "restricted")
        );
    let involved = matches!(membership.as_deref(), Some("join" | "invite" | "knock"));
    if !peekable && !involved {
        return Err(not_found());
    }
    if let Some(membership) = membership {
        summary["membership"] = Value::String(membership);
    }
    Ok(axum::Json(summary))
}
