use axum::{extract::State, response::IntoResponse};
use http::header;
use ruma::api::client::filter::{create_filter, get_filter};

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

pub async fn create(
    State(s): State<AppState>,
    req: Ruma<create_filter::v3::Request>,
) -> Result<RumaResponse<create_filter::v3::Response>> {
    let me = req.identity()?;
    ensure_self(&me.user_id, &req.body.user_id, "create filters")?;
    // ruma has validated the shape; the client's bytes are what we keep.
    let id = s.users.create_filter(&me.user_id, &req.raw_body)?;
    Ok(create_filter::v3::Response::new(id.to_string()).into())
}

/// Returns the filter exactly as it was uploaded, so no raw JSON is re-shaped.
pub async fn get(
    State(s): State<AppState>,
    req: Ruma<get_filter::v3::Request>,
) -> Result<impl IntoResponse> {
    let me = req.identity()?;
    ensure_self(&me.user_id, &req.body.user_id, "read the filters")?;
    let not_found = || Error::not_found("No filter with that id");
    let id: u64 = req.body.filter_id.parse().map_err(|_| not_found())?;
    let json = s.users.filter(&me.user_id, id)?.ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}
