//! `POST /user/{userId}/openid/request_token`.

use axum::extract::State;
use ruma::{api::client::account::request_openid_token, authentication::TokenType};

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::Result,
    users::OPENID_LIFETIME,
};

pub async fn request_token(
    State(s): State<AppState>,
    req: Ruma<request_openid_token::v3::Request>,
) -> Result<RumaResponse<request_openid_token::v3::Response>> {
    let me = req.identity()?;
    ensure_self(&me.user_id, &req.body.user_id, "request OpenID tokens")?;
    let token = s.users.issue_openid_token(&me.user_id)?;
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        s.config.server_name.clone(),
        OPENID_LIFETIME,
    )
    .into())
}
