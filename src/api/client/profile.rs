use axum::extract::State;
use ruma::{
    api::client::profile::{
        delete_profile_field, get_profile, get_profile_field, set_profile_field,
    },
    profile::{ProfileFieldValue, UserProfile},
};

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

fn no_profile() -> Error {
    Error::not_found("There is no profile for this user")
}

/// Profiles of local accounts that exist; remote profiles come with federation.
fn ensure_profile_exists(s: &AppState, user: &ruma::UserId) -> Result<()> {
    if !s.users.is_local(user) || !s.users.is_active(user)? {
        return Err(no_profile());
    }
    Ok(())
}

pub async fn get_profile(
    State(s): State<AppState>,
    req: Ruma<get_profile::v3::Request>,
) -> Result<RumaResponse<get_profile::v3::Response>> {
    let user = &req.body.user_id;
    ensure_profile_exists(&s, user)?;
    let mut profile = UserProfile::new();
    for (field, value) in s.users.profile(user)? {
        profile.set(field, value);
    }
    Ok(
        get_profile::v3::Response::from_iter(profile.iter().map(|(k, v)| (k.clone(), v.clone())))
            .into(),
    )
}

pub async fn get_field(
    State(s): State<AppState>,
    req: Ruma<get_profile_field::v3::Request>,
) -> Result<RumaResponse<get_profile_field::v3::Response>> {
    let user = &req.body.user_id;
    ensure_profile_exists(&s, user)?;
    let field = req.body.field.as_str();
    let value = s
        .users
        .profile_field(user, field)?
        .ok_or_else(|| Error::not_found(format!("This profile has no '{field}'")))?;
    let value = ProfileFieldValue::new(field, value)
        .map_err(|e| Error::internal(format!("stored profile field {field} is invalid: {e}")))?;
    Ok(get_profile_field::v3::Response::new(value).into())
}

pub async fn set_field(
    State(s): State<AppState>,
    req: Ruma<set_profile_field::v3::Request>,
) -> Result<RumaResponse<set_profile_field::v3::Response>> {
    let me = req.identity()?;
    ensure_self(&me.user_id, &req.body.user_id, "change the profile")?;
    let value = &req.body.value;
    let field = value.field_name();
    s.users
        .set_profile_field(&me.user_id, field.as_str(), value.value().into_owned())?;
    propagate_if_shown_in_rooms(&s, &me.user_id, field.as_str()).await?;
    Ok(set_profile_field::v3::Response::new().into())
}

pub async fn delete_field(
    State(s): State<AppState>,
    req: Ruma<delete_profile_field::v3::Request>,
) -> Result<RumaResponse<delete_profile_field::v3::Response>> {
    let me = req.identity()?;
    ensure_self(&me.user_id, &req.body.user_id, "change the profile")?;
    s.users
        .delete_profile_field(&me.user_id, req.body.field.as_str())?;
    propagate_if_shown_in_rooms(&s, &me.user_id, req.body.field.as_str()).await?;
    Ok(delete_profile_field::v3::Response::new().into())
}

/// Display names and avatars also live in each room's member event.
async fn propagate_if_shown_in_rooms(s: &AppState, user: &ruma::UserId, field: &str) -> Result<()> {
    if !matches!(field, "displayname" | "avatar_url") {
        return Ok(());
    }
    let profile = s.users.profile(user)?;
    let text = |key: &str| profile.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let (name, avatar) = (text("displayname"), text("avatar_url"));
    s.rooms
        .propagate_profile(user, name.as_deref(), avatar.as_deref())
        .await?;
    Ok(())
}
