//! Third-party networks (`/thirdparty/...`). Bridges would provide them as
//! application services; bigd has none yet, so it knows no protocols, no
//! locations and no users on other networks, and says so.

use axum::extract::State;
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

fn unknown_protocol(protocol: &str) -> Error {
    Error::not_found(format!(
        "No bridge on this server provides the protocol {protocol:?}"
    ))
}

pub async fn protocols(
    State(_): State<AppState>,
    req: Ruma<get_protocols::v3::Request>,
) -> Result<RumaResponse<get_protocols::v3::Response>> {
    req.identity()?;
    Ok(get_protocols::v3::Response::new(Default::default()).into())
}

pub async fn protocol(
    State(_): State<AppState>,
    req: Ruma<get_protocol::v3::Request>,
) -> Result<RumaResponse<get_protocol::v3::Response>> {
    req.identity()?;
    Err(unknown_protocol(&req.body.protocol))
}

pub async fn location_for_protocol(
    State(_): State<AppState>,
    req: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<RumaResponse<get_location_for_protocol::v3::Response>> {
    req.identity()?;
    Err(unknown_protocol(&req.body.protocol))
}

pub async fn user_for_protocol(
    State(_): State<AppState>,
    req: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<RumaResponse<get_user_for_protocol::v3::Response>> {
    req.identity()?;
    Err(unknown_protocol(&req.body.protocol))
}

pub async fn location_for_alias(
    State(_): State<AppState>,
    req: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<RumaResponse<get_location_for_room_alias::v3::Response>> {
    req.identity()?;
    Ok(get_location_for_room_alias::v3::Response::new(Vec::new()).into())
}

pub async fn user_for_user_id(
    State(_): State<AppState>,
    req: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<RumaResponse<get_user_for_user_id::v3::Response>> {
    req.identity()?;
    Ok(get_user_for_user_id::v3::Response::new(Vec::new()).into())
}
