//! `/.well-known/matrix/{client,server,support}`: server discovery and
//! support contacts, from config.

use axum::{Json, Router, extract::State, routing::get};
use http::StatusCode;

use super::AppState;
use crate::error::{Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/matrix/client", get(client))
        .route("/.well-known/matrix/server", get(server))
        .route("/.well-known/matrix/support", get(support))
}

async fn client(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "m.homeserver": { "base_url": s.config.client_base_url() } }))
}

async fn server(State(s): State<AppState>) -> Result<Json<serde_json::Value>> {
    match &s.config.well_known.server {
        Some(delegated) => Ok(Json(serde_json::json!({ "m.server": delegated }))),
        None => Err(Error::new(
            StatusCode::NOT_FOUND,
            ruma::api::error::ErrorKind::NotFound,
            "This server does not delegate federation (well_known.server is not set)",
        )),
    }
}

async fn support(State(s): State<AppState>) -> Result<Json<serde_json::Value>> {
    let wk = &s.config.well_known;
    if wk.support_page.is_none() && wk.support_contacts.is_empty() {
        return Err(Error::new(
            StatusCode::NOT_FOUND,
            ruma::api::error::ErrorKind::NotFound,
            "No support information is published (well_known.support_page and support_contacts are not set)",
        ));
    }
    let contacts: Vec<serde_json::Value> = wk
        .support_contacts
        .iter()
        .map(|c| {
            let mut entry = serde_json::json!({ "role": c.role });
            if let Some(id) = &c.matrix_id {
                entry["matrix_id"] = serde_json::json!(id);
            }
            if let Some(email) = &c.email_address {
                entry["email_address"] = serde_json::json!(email);
            }
            entry
        })
        .collect();
    let mut body = serde_json::json!({ "contacts": contacts });
    if let Some(page) = &wk.support_page {
        body["support_page"] = serde_json::json!(page);
    }
    Ok(Json(body))
}
