//! `/.well-known/matrix/{client,server}`: server discovery from config.

use axum::{Json, Router, extract::State, routing::get};
use http::StatusCode;

use super::AppState;
use crate::error::{Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/matrix/client", get(client))
        .route("/.well-known/matrix/server", get(server))
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
