//! Room aliases and the public room directory.

use axum::extract::State;
use ruma::api::client::{
    alias::{create_alias, delete_alias, get_alias},
    directory::{
        get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
    },
    room::{Visibility, aliases},
};

use super::rooms::page_limit;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
    rooms::PublicRoom,
};

pub async fn create(
    State(s): State<AppState>,
    req: Ruma<create_alias::v3::Request>,
) -> Result<RumaResponse<create_alias::v3::Response>> {
    let me = req.identity()?;
    s.rooms
        .set_alias(&req.body.room_alias, &req.body.room_id, &me.user_id)?;
    Ok(create_alias::v3::Response::new().into())
}

pub async fn get(
    State(s): State<AppState>,
    req: Ruma<get_alias::v3::Request>,
) -> Result<RumaResponse<get_alias::v3::Response>> {
    let alias = &req.body.room_alias;
    let room = s
        .rooms
        .resolve_alias(alias)?
        .ok_or_else(|| Error::not_found(format!("The alias {alias} does not exist")))?;
    Ok(get_alias::v3::Response::new(room, vec![s.config.server_name.clone()]).into())
}

pub async fn delete(
    State(s): State<AppState>,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<RumaResponse<delete_alias::v3::Response>> {
    let me = req.identity()?;
    s.rooms.remove_alias(&req.body.room_alias, &me.user_id)?;
    Ok(delete_alias::v3::Response::new().into())
}

pub async fn room_aliases(
    State(s): State<AppState>,
    req: Ruma<aliases::v3::Request>,
) -> Result<RumaResponse<aliases::v3::Response>> {
    let me = req.identity()?;
    Ok(aliases::v3::Response::new(s.rooms.aliases_for(&req.body.room_id, &me.user_id)?).into())
}

pub async fn get_visibility(
    State(s): State<AppState>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<RumaResponse<get_room_visibility::v3::Response>> {
    s.rooms.require_meta(&req.body.room_id)?;
    let visibility = if s.rooms.is_published(&req.body.room_id)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(visibility).into())
}

pub async fn set_visibility(
    State(s): State<AppState>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<RumaResponse<set_room_visibility::v3::Response>> {
    let me = req.identity()?;
    let publish = req.body.visibility == Visibility::Public;
    s.rooms
        .set_published(&req.body.room_id, &me.user_id, publish)?;
    Ok(set_room_visibility::v3::Response::new().into())
}

/// A directory page: the chunk, next and previous tokens, and the total.
type DirectoryPage = (
    Vec<ruma::directory::PublicRoomsChunk>,
    Option<String>,
    Option<String>,
    usize,
);

/// One page of the directory: `since` is the offset (`p<n>`) into the ordered list.
fn page(rooms: Vec<PublicRoom>, since: Option<&str>, limit: usize) -> Result<DirectoryPage> {
    let offset = match since {
        Some(token) => token
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid_param(format!(
                    "'{token}' is not a directory token from this server"
                ))
            })?,
        None => 0,
    };
    let total = rooms.len();
    let chunk = rooms
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|r| serde_json::from_value(r.summary))
        .collect::<Result<Vec<_>, _>>()?;
    let next = (offset + limit < total).then(|| format!("p{}", offset + limit));
    let prev = (offset > 0).then(|| format!("p{}", offset.saturating_sub(limit)));
    Ok((chunk, next, prev, total))
}

fn only_local(s: &AppState, server: Option<&ruma::ServerName>) -> Result<()> {
    match server {
        Some(server) if server != s.config.server_name => Err(Error::forbidden(
            "Other servers' directories need federation, which is not enabled",
        )),
        _ => Ok(()),
    }
}

pub async fn public_rooms(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<RumaResponse<get_public_rooms::v3::Response>> {
    let b = &req.body;
    only_local(&s, b.server.as_deref())?;
    let (chunk, next, prev, total) = page(
        s.rooms.public_rooms(None)?,
        b.since.as_deref(),
        page_limit(b.limit),
    )?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(ruma::UInt::new_saturating(total as u64));
    Ok(response.into())
}

pub async fn public_rooms_filtered(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<RumaResponse<get_public_rooms_filtered::v3::Response>> {
    let b = &req.body;
    only_local(&s, b.server.as_deref())?;
    let rooms = s
        .rooms
        .public_rooms(b.filter.generic_search_term.as_deref())?;
    let (chunk, next, prev, total) = page(rooms, b.since.as_deref(), page_limit(b.limit))?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(ruma::UInt::new_saturating(total as u64));
    Ok(response.into())
}
