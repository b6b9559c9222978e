use axum::extract::State;
use http::StatusCode;
use ruma::api::{
    client::account::{
        ThirdPartyIdRemovalStatus, add_3pid, bind_3pid, change_password,
        check_registration_token_validity, deactivate, delete_3pid, get_3pids,
        get_username_availability, register, request_3pid_management_token_via_email,
        request_3pid_management_token_via_msisdn, request_password_change_token_via_email,
        request_password_change_token_via_msisdn, request_registration_token_via_email,
        request_registration_token_via_msisdn, unbind_3pid, whoami,
    },
    error::ErrorKind,
};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedSessionId, UInt,
    thirdparty::{Medium, ThirdPartyIdentifierInit},
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    auth::{Registered, Registration, is_valid_token_string, sms::Purpose},
    error::{Error, Result},
};

pub async fn register(
    State(s): State<AppState>,
    req: Ruma<register::v3::Request>,
) -> Result<RumaResponse<register::v3::Response>> {
    let client_ip = req.client_ip;
    let body = req.body;
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest accounts are not available on this server",
        ));
    }
    let registration = Registration {
        username: body.username,
        password: body.password,
        device_id: body.device_id,
        initial_device_display_name: body.initial_device_display_name,
        inhibit_login: body.inhibit_login,
        refresh_token: body.refresh_token,
        auth: body.auth,
        client_ip,
    };
    let response = match s.auth.register(registration).await? {
        Registered::AccountOnly(user) => register::v3::Response::new(user),
        Registered::LoggedIn(tokens) => {
            let mut r = register::v3::Response::new(tokens.user_id);
            r.access_token = Some(tokens.access_token);
            r.device_id = Some(tokens.device_id);
            r.refresh_token = tokens.refresh_token;
            r.expires_in = tokens.expires_in;
            r
        }
    };
    Ok(response.into())
}

pub async fn username_available(
    State(s): State<AppState>,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<RumaResponse<get_username_availability::v3::Response>> {
    if !s.config.registration.enabled {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    s.auth.rate_limits.check(
        "register_ip",
        &req.client_ip,
        s.config.rate_limits.register_per_ip,
    )?;
    s.auth
        .check_username_available(&req.body.username.to_lowercase())?;
    Ok(get_username_availability::v3::Response::new(true).into())
}

pub async fn registration_token_validity(
    State(s): State<AppState>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<RumaResponse<check_registration_token_validity::v1::Response>> {
    if !s.config.registration.enabled || !s.config.registration.tokens_required {
        return Err(Error::forbidden(
            "Registration tokens are not in use on this server",
        ));
    }
    s.auth.rate_limits.check(
        "register_ip",
        &req.client_ip,
        s.config.rate_limits.register_per_ip,
    )?;
    let token = &req.body.token;
    let valid = is_valid_token_string(token) && s.auth.registration_tokens.is_usable(token)?;
    Ok(check_registration_token_validity::v1::Response::new(valid).into())
}

pub async fn whoami(
    State(_): State<AppState>,
    req: Ruma<whoami::v3::Request>,
) -> Result<RumaResponse<whoami::v3::Response>> {
    let me = req.identity()?;
    let mut response = whoami::v3::Response::new(me.user_id.clone(), false);
    response.device_id = Some(me.device_id.clone());
    Ok(response.into())
}

pub async fn change_password(
    State(s): State<AppState>,
    req: Ruma<change_password::v3::Request>,
) -> Result<RumaResponse<change_password::v3::Response>> {
    // Without a token only an email-verified reset could work, and email is unsupported.
    let me = req.identity()?.clone();
    let body = req.body;
    s.auth
        .change_password(
            &me.user_id,
            &me.device_id,
            body.new_password,
            !body.logout_devices,
            body.auth,
        )
        .await?;
    Ok(change_password::v3::Response::new().into())
}

pub async fn deactivate(
    State(s): State<AppState>,
    req: Ruma<deactivate::v3::Request>,
) -> Result<RumaResponse<deactivate::v3::Response>> {
    let me = req.identity()?.clone();
    // Pending log entries are written first, so that deleting the user's log
    // deletes them too.
    s.push.spread_log()?;
    s.auth.deactivate(&me.user_id, req.body.auth).await?;
    // No identity server is ever bound by bigd, so there is nothing to unbind.
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

pub async fn threepids(
    State(s): State<AppState>,
    req: Ruma<get_3pids::v3::Request>,
) -> Result<RumaResponse<get_3pids::v3::Response>> {
    let me = req.identity()?;
    // Phone numbers are the only 3PIDs (email is unsupported).
    let ms = |ms: u64| MilliSecondsSinceUnixEpoch(UInt::new_saturating(ms));
    let threepids = s
        .users
        .phone_numbers(&me.user_id)?
        .into_iter()
        .map(|n| {
            ThirdPartyIdentifierInit {
                address: n.address,
                medium: Medium::Msisdn,
                validated_at: ms(n.validated_at),
                added_at: ms(n.added_at),
            }
            .into()
        })
        .collect();
    Ok(get_3pids::v3::Response::new(threepids).into())
}

fn submit_url(s: &AppState) -> String {
    format!(
        "{}/_matrix/client/unstable/ai.iambig/msisdn/submit_token",
        s.config.client_base_url()
    )
}

fn session_id(sid: String) -> Result<OwnedSessionId> {
    OwnedSessionId::try_from(sid).map_err(|e| Error::internal(format!("session id: {e}")))
}

pub async fn add_threepid(
    State(s): State<AppState>,
    req: Ruma<add_3pid::v3::Request>,
) -> Result<RumaResponse<add_3pid::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    s.auth
        .add_threepid(
            &me.user_id,
            body.sid.as_str(),
            body.client_secret.as_str(),
            body.auth,
        )
        .await?;
    Ok(add_3pid::v3::Response::new().into())
}

pub async fn delete_threepid(
    State(s): State<AppState>,
    req: Ruma<delete_3pid::v3::Request>,
) -> Result<RumaResponse<delete_3pid::v3::Response>> {
    let me = req.identity()?;
    s.auth
        .delete_threepid(&me.user_id, &req.body.medium, &req.body.address)?;
    // bigd never binds numbers to an identity server, so none is unbound.
    Ok(delete_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// bigd does not talk to identity servers: binding is refused, not faked.
pub async fn bind_threepid(
    State(_): State<AppState>,
    req: Ruma<bind_3pid::v3::Request>,
) -> Result<RumaResponse<bind_3pid::v3::Response>> {
    req.identity()?;
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ServerNotTrusted,
        "This homeserver does not bind third-party identifiers to identity servers; \
         add phone numbers to your account with /account/3pid/add",
    ))
}

/// Nothing is ever bound to an identity server, so the spec's answer is `no-support`.
pub async fn unbind_threepid(
    State(_): State<AppState>,
    req: Ruma<unbind_3pid::v3::Request>,
) -> Result<RumaResponse<unbind_3pid::v3::Response>> {
    req.identity()?;
    Ok(unbind_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

fn medium_not_supported(medium: &str) -> Error {
    Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidMediumNotSupported,
        format!("This server does not support {medium} verification"),
    )
}

pub async fn register_email_token(
    State(_): State<AppState>,
    _: Ruma<request_registration_token_via_email::v3::Request>,
) -> Result<RumaResponse<request_registration_token_via_email::v3::Response>> {
    Err(medium_not_supported("email"))
}

pub async fn register_msisdn_token(
    State(s): State<AppState>,
    req: Ruma<request_registration_token_via_msisdn::v3::Request>,
) -> Result<RumaResponse<request_registration_token_via_msisdn::v3::Response>> {
    let b = &req.body;
    let sid = s
        .auth
        .request_msisdn_token(
            Purpose::Register,
            b.client_secret.as_str(),
            &b.country,
            &b.phone_number,
            b.send_attempt.into(),
            &req.client_ip,
        )
        .await?;
    let mut response = request_registration_token_via_msisdn::v3::Response::new(session_id(sid)?);
    response.submit_url = Some(submit_url(&s));
    Ok(response.into())
}

pub async fn password_email_token(
    State(_): State<AppState>,
    _: Ruma<request_password_change_token_via_email::v3::Request>,
) -> Result<RumaResponse<request_password_change_token_via_email::v3::Response>> {
    Err(medium_not_supported("email"))
}

pub async fn password_msisdn_token(
    State(_): State<AppState>,
    _: Ruma<request_password_change_token_via_msisdn::v3::Request>,
) -> Result<RumaResponse<request_password_change_token_via_msisdn::v3::Response>> {
    Err(medium_not_supported("phone number"))
}

pub async fn threepid_email_token(
    State(_): State<AppState>,
    _: Ruma<request_3pid_management_token_via_email::v3::Request>,
) -> Result<RumaResponse<request_3pid_management_token_via_email::v3::Response>> {
    Err(medium_not_supported("email"))
}

pub async fn threepid_msisdn_token(
    State(s): State<AppState>,
    req: Ruma<request_3pid_management_token_via_msisdn::v3::Request>,
) -> Result<RumaResponse<request_3pid_management_token_via_msisdn::v3::Response>> {
    let b = &req.body;
    let sid = s
        .auth
        .request_msisdn_token(
            Purpose::AddThreepid,
            b.client_secret.as_str(),
            &b.country,
            &b.phone_number,
            b.send_attempt.into(),
            &req.client_ip,
        )
        .await?;
    let mut response =
        request_3pid_management_token_via_msisdn::v3::Response::new(session_id(sid)?);
    response.submit_url = Some(submit_url(&s));
    Ok(response.into())
}
