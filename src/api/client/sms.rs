//! Endpoints without a ruma type: requesting a sign-in code by SMS, the
//! `submit_url` of phone-number verification, and the deprecated identity-server
//! `POST /account/3pid` (docs/extensions.md, docs/phone.md).

use axum::{Json, extract::Request, extract::State};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::{
        AppState,
        ruma::{client_ip, read_body},
    },
    error::{Error, Result},
};

/// Reads a JSON body of type `T`: M_NOT_JSON for malformed JSON, M_BAD_JSON
/// for the wrong shape.
async fn json_body<T: serde::de::DeserializeOwned>(
    s: &AppState,
    body: axum::body::Body,
) -> Result<T> {
    let bytes = read_body(body, s.config.http.max_request_bytes).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::not_json(format!("The request body is not valid JSON: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| Error::bad_json(format!("The request body has the wrong shape: {e}")))
}

#[derive(Deserialize)]
struct CodeRequest {
    phone: String,
}

/// `POST /_matrix/client/unstable/ai.iambig/sms/request`
pub async fn request_code(State(s): State<AppState>, req: Request) -> Result<Json<Value>> {
    let (parts, body) = req.into_parts();
    let ip = client_ip(&parts, s.config.http.trust_forwarded_for);
    let body: CodeRequest = json_body(&s, body).await?;
    let sent = s.auth.request_sms_code(&body.phone, &ip).await?;
    Ok(Json(json!({
        "session": sent.session,
        "expires_in_ms": sent.expires_in.as_millis() as u64,
        "resend_after_ms": sent.resend_after.as_millis() as u64,
    })))
}

#[derive(Deserialize)]
struct SubmitToken {
    sid: String,
    client_secret: String,
    token: String,
}

/// `POST /_matrix/client/unstable/ai.iambig/msisdn/submit_token`: the
/// `submit_url` of `msisdn/requestToken`, shaped like the Identity Service's
/// `submitToken` (no access token).
pub async fn submit_token(State(s): State<AppState>, req: Request) -> Result<Json<Value>> {
    let (_, body) = req.into_parts();
    let body: SubmitToken = json_body(&s, body).await?;
    let success = s
        .auth
        .sms
        .submit_token(&body.sid, &body.client_secret, body.token.trim())?;
    Ok(Json(json!({ "success": success })))
}

/// `POST /_matrix/client/v3/account/3pid` (deprecated): binds a 3PID verified
/// by an identity server. bigd verifies numbers itself and trusts no identity
/// server, so this always fails as the spec describes.
pub async fn add_threepid_via_identity_server(
    State(s): State<AppState>,
    req: Request,
) -> Result<Json<Value>> {
    let (parts, _) = req.into_parts();
    crate::api::ruma::authenticate(&s, &parts)?;
    Err(Error::new(
        StatusCode::FORBIDDEN,
        ErrorKind::ThreepidAuthFailed,
        "This homeserver does not accept third-party identifiers verified by identity \
         servers; verify the number with /account/3pid/msisdn/requestToken and add it \
         with /account/3pid/add",
    ))
}
