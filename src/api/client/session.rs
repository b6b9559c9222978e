use axum::extract::State;
use ruma::api::client::session::{
    get_login_types::v3::{self as login_types, LoginType, PasswordLoginType},
    login::v3::{self as login_api, DiscoveryInfo, HomeserverInfo, LoginInfo},
    logout, logout_all, refresh_token,
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse, read_body},
    },
    auth::{IssuedTokens, SmsLogin, parse_user_input, sms::SMS_LOGIN_TYPE},
    error::{Error, Result},
};

pub async fn login_types(
    State(_): State<AppState>,
    _: Ruma<login_types::Request>,
) -> Result<RumaResponse<login_types::Response>> {
    let sms = LoginType::new(SMS_LOGIN_TYPE, Default::default())
        .map_err(|e| Error::internal(format!("cannot build the SMS login type: {e}")))?;
    Ok(login_types::Response::new(vec![LoginType::Password(PasswordLoginType::new()), sms]).into())
}

/// `POST /login`, with the body checked for a `type` before ruma parses it:
/// ruma 0.17's `LoginInfo` deserializer panics on an object without one.
pub async fn login_checked(
    State(s): State<AppState>,
    req: axum::extract::Request,
) -> Result<RumaResponse<login_api::Response>> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, s.config.http.max_request_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::not_json(format!("The request body is not valid JSON: {e}")))?;
    if value.get("type").is_none() {
        return Err(Error::missing_param(
            "The login needs a \"type\"; GET /login lists the supported ones",
        ));
    }
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    let parsed =
        <Ruma<login_api::Request> as axum::extract::FromRequest<AppState>>::from_request(req, &s)
            .await?;
    login(State(s), parsed).await
}

#[allow(deprecated)] // the legacy `user` field is still sent by old clients
async fn login(
    State(s): State<AppState>,
    req: Ruma<login_api::Request>,
) -> Result<RumaResponse<login_api::Response>> {
    let body = req.body;
    if body.login_info.login_type() == SMS_LOGIN_TYPE {
        let data = body.login_info.data();
        let field = |name: &str| {
            data.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::missing_param(format!("The SMS login needs \"{name}\" (a string)"))
                })
        };
        let login = SmsLogin {
            session: field("session")?,
            code: field("code")?,
            device_id: body.device_id,
            initial_device_display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
            client_ip: req.client_ip,
        };
        let tokens = s.auth.login_sms(login).await?;
        return Ok(login_response(&s, tokens).into());
    }
    let LoginInfo::Password(password) = body.login_info else {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Unsupported login type; GET /login lists the supported ones",
        ));
    };
    let user = match (&password.identifier, &password.user) {
        (Some(identifier), _) => s.auth.login_identifier_user(identifier)?,
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
    Ok(login_response(&s, tokens).into())
}

fn login_response(s: &AppState, tokens: IssuedTokens) -> login_api::Response {
    let mut response =
        login_api::Response::new(tokens.user_id, tokens.access_token, tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    response.well_known = Some(DiscoveryInfo::new(HomeserverInfo::new(
        s.config.client_base_url(),
    )));
    response
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
