use axum::extract::State;
use ruma::api::client::session::{
    get_login_types::v3::{self as login_types, LoginType, PasswordLoginType},
    login::v3::{self as login_api, DiscoveryInfo, HomeserverInfo, LoginInfo},
    logout, logout_all, refresh_token,
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    auth::parse_user_input,
    error::{Error, Result},
};

pub async fn login_types(
    State(_): State<AppState>,
    _: Ruma<login_types::Request>,
) -> Result<RumaResponse<login_types::Response>> {
    Ok(login_types::Response::new(vec![LoginType::Password(PasswordLoginType::new())]).into())
}

#[allow(deprecated)] // the legacy `user` field is still sent by old clients
pub async fn login(
    State(s): State<AppState>,
    req: Ruma<login_api::Request>,
) -> Result<RumaResponse<login_api::Response>> {
    let body = req.body;
    let LoginInfo::Password(password) = body.login_info else {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Unsupported login type; GET /login lists the supported ones",
        ));
    };
    let user = match (&password.identifier, &password.user) {
        (Some(identifier), _) => crate::auth::identifier_user(identifier, s.users.server_name())?,
        (None, Some(user)) => parse_user_input(user, s.users.server_name())?,
        (None, None) => return Err(Error::missing_param("The login needs an identifier")),
    };
    let tokens = s
        .auth
        .login_password(
            user,
            &password.password,
            body.device_id,
            body.initial_device_display_name,
            body.refresh_token,
            &req.client_ip,
        )
        .await?;
    let mut response =
        login_api::Response::new(tokens.user_id, tokens.access_token, tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    response.well_known = Some(DiscoveryInfo::new(HomeserverInfo::new(
        s.config.client_base_url(),
    )));
    Ok(response.into())
}

pub async fn logout(
    State(s): State<AppState>,
    req: Ruma<logout::v3::Request>,
) -> Result<RumaResponse<logout::v3::Response>> {
    let me = req.identity()?;
    s.auth.sessions.logout_device(&me.user_id, &me.device_id)?;
    Ok(logout::v3::Response::new().into())
}

pub async fn logout_all(
    State(s): State<AppState>,
    req: Ruma<logout_all::v3::Request>,
) -> Result<RumaResponse<logout_all::v3::Response>> {
    let me = req.identity()?;
    let mut batch = s.db.batch();
    let forgotten = s
        .auth
        .sessions
        .stage_logout_all(&mut batch, &me.user_id, None)?;
    s.auth.sessions.commit_logout(batch, forgotten)?;
    Ok(logout_all::v3::Response::new().into())
}

pub async fn refresh(
    State(s): State<AppState>,
    req: Ruma<refresh_token::v3::Request>,
) -> Result<RumaResponse<refresh_token::v3::Response>> {
    let tokens = s.auth.sessions.refresh(&req.body.refresh_token)?;
    let mut response = refresh_token::v3::Response::new(tokens.access_token);
    response.refresh_token = tokens.refresh_token;
    response.expires_in_ms = tokens.expires_in;
    Ok(response.into())
}
