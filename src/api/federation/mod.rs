//! Server-Server API endpoints. Today: our signing key.

use axum::{Router, extract::State};
use ruma::api::federation::discovery::get_server_keys;

use super::{
    AppState,
    ruma::{RouterExt, Ruma, RumaResponse},
};
use crate::error::Result;

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router.ruma(server_keys)
}

/// `GET /_matrix/key/v2/server`: the key that signs this server's events.
async fn server_keys(
    State(s): State<AppState>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<RumaResponse<get_server_keys::v2::Response>> {
    Ok(get_server_keys::v2::Response::new(s.signing_key.server_keys()?).into())
}
