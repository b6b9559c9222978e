//! Membership endpoints: invite, join, leave, kick, ban, unban, forget, knock.

use axum::extract::State;
use ruma::{
    OwnedRoomId, RoomOrAliasId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_mutual_rooms, invite_user, join_room_by_id,
            join_room_by_id_or_alias, kick_user, leave_room, unban_user,
        },
    },
};

use super::rooms::member_profile;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

/// A room id, or the room a local alias points to.
fn resolve(s: &AppState, target: &RoomOrAliasId) -> Result<OwnedRoomId> {
    match <&ruma::RoomId>::try_from(target) {
        Ok(room) => Ok(room.to_owned()),
        Err(alias) => s
            .rooms
            .resolve_alias(alias)?
            .ok_or_else(|| Error::not_found(format!("The alias {alias} does not exist"))),
    }
}

pub async fn invite(
    State(s): State<AppState>,
    req: Ruma<invite_user::v3::Request>,
) -> Result<RumaResponse<invite_user::v3::Response>> {
    let me = req.identity()?.clone();
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.body.recipient else {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::ThreepidMediumNotSupported,
            "Inviting by third-party identifier needs an identity server, which this server does not use",
        ));
    };
    let target = &recipient.user_id;
    if !s.users.is_local(target) {
        return Err(Error::forbidden(format!(
            "Cannot invite {target}: federation is not enabled on this server"
        )));
    }
    if !s.users.is_active(target)? {
        return Err(Error::not_found(format!("{target} does not exist")));
    }
    s.rooms
        .invite(
            &req.body.room_id,
            &me.user_id,
            target,
            recipient.reason.as_deref(),
            false,
        )
        .await?;
    Ok(invite_user::v3::Response::new().into())
}

pub async fn join_by_id(
    State(s): State<AppState>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> Result<RumaResponse<join_room_by_id::v3::Response>> {
    let me = req.identity()?.clone();
    let room = &req.body.room_id;
    s.rooms
        .join(
            room,
            &me.user_id,
            req.body.reason.as_deref(),
            member_profile(&s, &me.user_id)?,
        )
        .await?;
    Ok(join_room_by_id::v3::Response::new(room.clone()).into())
}

pub async fn join_by_id_or_alias(
    State(s): State<AppState>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let me = req.identity()?.clone();
    let room = resolve(&s, &req.body.room_id_or_alias)?;
    s.rooms
        .join(
            &room,
            &me.user_id,
            req.body.reason.as_deref(),
            member_profile(&s, &me.user_id)?,
        )
        .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room).into())
}

pub async fn leave(
    State(s): State<AppState>,
    req: Ruma<leave_room::v3::Request>,
) -> Result<RumaResponse<leave_room::v3::Response>> {
    let me = req.identity()?.clone();
    s.rooms
        .leave(&req.body.room_id, &me.user_id, req.body.reason.as_deref())
        .await?;
    Ok(leave_room::v3::Response::new().into())
}

pub async fn kick(
    State(s): State<AppState>,
    req: Ruma<kick_user::v3::Request>,
) -> Result<RumaResponse<kick_user::v3::Response>> {
    let me = req.identity()?.clone();
    let b = &req.body;
    s.rooms
        .kick(&b.room_id, &me.user_id, &b.user_id, b.reason.as_deref())
        .await?;
    Ok(kick_user::v3::Response::new().into())
}

pub async fn ban(
    State(s): State<AppState>,
    req: Ruma<ban_user::v3::Request>,
) -> Result<RumaResponse<ban_user::v3::Response>> {
    let me = req.identity()?.clone();
    let b = &req.body;
    s.rooms
        .ban(&b.room_id, &me.user_id, &b.user_id, b.reason.as_deref())
        .await?;
    Ok(ban_user::v3::Response::new().into())
}

pub async fn unban(
    State(s): State<AppState>,
    req: Ruma<unban_user::v3::Request>,
) -> Result<RumaResponse<unban_user::v3::Response>> {
    let me = req.identity()?.clone();
    let b = &req.body;
    s.rooms
        .unban(&b.room_id, &me.user_id, &b.user_id, b.reason.as_deref())
        .await?;
    Ok(unban_user::v3::Response::new().into())
}

pub async fn forget(
    State(s): State<AppState>,
    req: Ruma<forget_room::v3::Request>,
) -> Result<RumaResponse<forget_room::v3::Response>> {
    let me = req.identity()?.clone();
    s.rooms.forget(&req.body.room_id, &me.user_id)?;
    Ok(forget_room::v3::Response::new().into())
}

pub async fn knock(
    State(s): State<AppState>,
    req: Ruma<knock_room::v3::Request>,
) -> Result<RumaResponse<knock_room::v3::Response>> {
    let me = req.identity()?.clone();
    let room = resolve(&s, &req.body.room_id_or_alias)?;
    s.rooms
        .knock(
            &room,
            &me.user_id,
            req.body.reason.as_deref(),
            member_profile(&s, &me.user_id)?,
        )
        .await?;
    Ok(knock_room::v3::Response::new(room).into())
}

/// Rooms per page of `/mutual_rooms`.
const MUTUAL_ROOMS_PAGE: usize = 100;

/// `GET /v1/mutual_rooms`: the rooms both the caller and `user_id` are joined
/// to, sorted by id, paged with the last id of the previous page.
pub async fn mutual_rooms(
    State(s): State<AppState>,
    req: Ruma<get_mutual_rooms::v1::Request>,
) -> Result<RumaResponse<get_mutual_rooms::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    if b.user_id == me.user_id {
        return Err(Error::invalid_param(
            "Mutual rooms with yourself are your joined rooms (GET /joined_rooms)",
        ));
    }
    let theirs: std::collections::BTreeSet<_> =
        s.rooms.joined_rooms(&b.user_id)?.into_iter().collect();
    let mut shared: Vec<_> = s
        .rooms
        .joined_rooms(&me.user_id)?
        .into_iter()
        .filter(|r| theirs.contains(r))
        .collect();
    shared.sort();
    let count = ruma::UInt::new_saturating(shared.len() as u64);
    let start = match &b.from {
        Some(from) => shared.partition_point(|r| r.as_str() <= from.as_str()),
        None => 0,
    };
    let page: Vec<_> = shared
        .iter()
        .skip(start)
        .take(MUTUAL_ROOMS_PAGE)
        .cloned()
        .collect();
    let next_batch = (start + page.len() < shared.len())
        .then(|| page.last().map(|r| r.to_string()))
        .flatten();
    let mut response = get_mutual_rooms::v1::Response::new(count, page);
    response.next_batch = next_batch;
    Ok(response.into())
}
