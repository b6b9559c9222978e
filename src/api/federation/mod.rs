//! Server-Server API endpoints. Today: our signing key and OpenID userinfo.

use axum::{Router, extract::State};
use ruma::api::federation::{discovery::get_server_keys, openid::get_openid_userinfo};

use super::{
    AppState,
    ruma::{RouterExt, Ruma, RumaResponse},
};
use crate::error::{Error, Result};

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router.ruma(server_keys).ruma(openid_userinfo)
}

/// `GET /_matrix/key/v2/server`: the key that signs this server's events.
async fn server_keys(
    State(s): State<AppState>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<RumaResponse<get_server_keys::v2::Response>> {
    Ok(get_server_keys::v2::Response::new(s.signing_key.server_keys()?).into())
}

/// `GET /_matrix/federation/v1/openid/userinfo`: whose OpenID token this is.
async fn openid_userinfo(
    State(s): State<AppState>,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> Result<RumaResponse<get_openid_userinfo::v1::Response>> {
    let user = s
        .users
        .openid_user(&req.body.access_token)?
        .ok_or_else(|| Error::unknown_token(false, "Unknown or expired OpenID token"))?;
    Ok(get_openid_userinfo::v1::Response::new(user).into())
}
