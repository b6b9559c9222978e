//! `GET /sync` (v3).

use axum::extract::State;
use ruma::api::client::{filter::FilterDefinition, sync::sync_events::v3 as sync_api};

use crate::{
    api::{AppState, ruma::Ruma},
    error::{Error, Result},
    sync::{SyncFilter, SyncRequest},
};

/// The response is built as JSON directly (it is large and mostly events that
/// are already serialised in their cache).
pub async fn sync(
    State(s): State<AppState>,
    req: Ruma<sync_api::Request>,
) -> Result<axum::Json<crate::sync::SyncResponse>> {
    let me = req.identity()?.clone();
    let body = req.body;
    let filter = match body.filter {
        None => SyncFilter::default(),
        Some(sync_api::Filter::FilterDefinition(def)) => SyncFilter::from_definition(&def),
        Some(sync_api::Filter::FilterId(id)) => {
            let unknown = || Error::invalid_param(format!("No filter with id '{id}'"));
            let id_num: u64 = id.parse().map_err(|_| unknown())?;
            let json = s.users.filter(&me.user_id, id_num)?.ok_or_else(unknown)?;
            let def: FilterDefinition = serde_json::from_slice(&json).map_err(|_| unknown())?;
            SyncFilter::from_definition(&def)
        }
        Some(_) => SyncFilter::default(),
    };
    let request = SyncRequest {
        since: body.since,
        set_presence: body.set_presence.to_string(),
        filter,
        full_state: body.full_state,
        timeout: body.timeout,
        use_state_after: body.use_state_after,
        since_acknowledges: true,
    };
    Ok(axum::Json(crate::sync::sync(&s, &me, request).await?))
}
