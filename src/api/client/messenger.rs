//! The messenger extensions (docs/extensions.md): contact discovery with the
//! Identity Service v2 `hash_details` and `lookup` served by bigd itself,
//! dialogs and last seen.
//!
//! These have no ruma request types (the identity ones expect an identity
//! server's token; bigd takes the user's own access token), so each handler
//! authenticates and parses its JSON body itself, as `ruma.rs` would.

use axum::{
    Json, Router,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::StatusCode;
use ruma::OwnedUserId;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    api::{
        AppState,
        client::discovery::DEFAULT_ROOM_VERSION,
        ruma::{authenticate, read_body},
    },
    auth::Identity,
    contacts::ContactEntry,
    error::{Error, Result},
};

const PREFIX: &str = "/_matrix/client/unstable/ai.iambig";
/// A full phone book (5,000 numbers with names) is larger than the usual
/// request body limit.
const CONTACTS_BODY_BYTES: usize = 4 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/contacts"), post(upload_contacts))
        .route(&format!("{PREFIX}/dialogs/{{user_id}}"), post(dialog))
        .route(&format!("{PREFIX}/last_seen/{{user_id}}"), get(last_seen))
        .route("/_matrix/identity/v2", get(identity_status))
        .route("/_matrix/identity/v2/hash_details", get(hash_details))
        .route("/_matrix/identity/v2/lookup", post(lookup))
}

/// Authenticates, then reads a JSON body of type `T` (M_NOT_JSON for
/// malformed JSON, M_BAD_JSON for the wrong shape).
async fn authenticated_json<T: DeserializeOwned>(
    s: &AppState,
    request: Request,
    limit: usize,
) -> Result<(Identity, T)> {
    let (parts, body) = request.into_parts();
    let identity = authenticate(s, &parts)?;
    let bytes = read_body(body, limit).await?;
    let parsed = serde_json::from_slice(&bytes).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            Error::not_json(format!("The request body is not valid JSON: {e}"))
        } else {
            Error::bad_json(format!("The request body has the wrong shape: {e}"))
        }
    })?;
    Ok((identity, parsed))
}

fn user_id(raw: &str) -> Result<OwnedUserId> {
    OwnedUserId::try_from(raw)
        .map_err(|e| Error::invalid_param(format!("Invalid user id {raw}: {e}")))
}

fn contact_discovery_on(s: &AppState) -> Result<()> {
    if !s.config.messenger.contact_discovery {
        return Err(Error::forbidden(
            "Contact discovery is disabled on this server",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct UploadContacts {
    contacts: Vec<ContactEntry>,
    #[serde(default)]
    replace: bool,
}

async fn upload_contacts(State(s): State<AppState>, request: Request) -> Result<Json<Value>> {
    contact_discovery_on(&s)?;
    let limit = s.config.http.max_request_bytes.max(CONTACTS_BODY_BYTES);
    let (me, body): (_, UploadContacts) = authenticated_json(&s, request, limit).await?;
    check_lookup_volume(&s, &me.user_id, body.contacts.len())?;
    let result = s
        .contacts
        .upload(&me.user_id, body.contacts, body.replace)?;
    Ok(Json(serde_json::to_value(result)?))
}

/// Numbers looked up count against the user's lookup budget, so a phone
/// book passes and walking a number range does not.
fn check_lookup_volume(s: &AppState, user: &ruma::UserId, numbers: usize) -> Result<()> {
    if numbers > crate::contacts::MAX_CONTACTS_PER_REQUEST {
        // Refused as too large before anything is counted.
        return Ok(());
    }
    s.auth.rate_limits.check_cost(
        "contact_lookups",
        user.as_str(),
        s.config.rate_limits.contact_lookups_per_user,
        numbers as f64,
    )
}

async fn identity_status(State(s): State<AppState>) -> Result<Json<Value>> {
    contact_discovery_on(&s)?;
    Ok(Json(json!({})))
}

async fn hash_details(State(s): State<AppState>, request: Request) -> Result<Json<Value>> {
    contact_discovery_on(&s)?;
    let (parts, _) = request.into_parts();
    authenticate(&s, &parts)?;
    Ok(Json(json!({
        "lookup_pepper": s.contacts.pepper(),
        "algorithms": ["sha256", "none"],
    })))
}

#[derive(Deserialize)]
struct Lookup {
    addresses: Vec<String>,
    algorithm: String,
    pepper: String,
}

async fn lookup(State(s): State<AppState>, request: Request) -> Result<Response> {
    contact_discovery_on(&s)?;
    let limit = s.config.http.max_request_bytes.max(CONTACTS_BODY_BYTES);
    let (me, body): (_, Lookup) = authenticated_json(&s, request, limit).await?;
    check_lookup_volume(&s, &me.user_id, body.addresses.len())?;
    if body.pepper != s.contacts.pepper() {
        let error = json!({
            "errcode": "M_INVALID_PEPPER",
            "error": "Unknown or wrong pepper: fetch hash_details again",
            "algorithm": "sha256",
            "lookup_pepper": s.contacts.pepper(),
        });
        return Ok((StatusCode::BAD_REQUEST, Json(error)).into_response());
    }
    let mappings: serde_json::Map<String, Value> = s
        .contacts
        .lookup(&body.algorithm, &body.addresses)?
        .into_iter()
        .map(|(address, user)| (address, json!(user)))
        .collect();
    Ok(Json(json!({ "mappings": mappings })).into_response())
}

async fn dialog(
    State(s): State<AppState>,
    Path(other): Path<String>,
    request: Request,
) -> Result<Json<Value>> {
    let (parts, _) = request.into_parts();
    let me = authenticate(&s, &parts)?;
    let other = user_id(&other)?;
    let dialog = s
        .messenger
        .dialog(&s, &me.user_id, &other, DEFAULT_ROOM_VERSION)
        .await?;
    Ok(Json(
        json!({ "room_id": dialog.room_id, "created": dialog.created }),
    ))
}

async fn last_seen(
    State(s): State<AppState>,
    Path(user): Path<String>,
    request: Request,
) -> Result<Json<Value>> {
    let (parts, _) = request.into_parts();
    let me = authenticate(&s, &parts)?;
    let user = user_id(&user)?;
    Ok(Json(s.messenger.last_seen(&s, &me.user_id, &user)?))
}
