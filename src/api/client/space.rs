//! `GET /v1/rooms/{roomId}/hierarchy`.

use axum::extract::State;
use ruma::api::client::space::get_hierarchy;

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;

/// The walk is recomputed for each page; `from` is the index of the page's
/// first room, which stays valid while the space does not change.
pub async fn hierarchy(
    State(s): State<AppState>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<RumaResponse<get_hierarchy::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let start = match &b.from {
        Some(from) => from
            .parse::<usize>()
            .map_err(|_| Error::invalid_param(format!("Invalid from token {from:?}")))?,
        None => 0,
    };
    let limit = b
        .limit
        .map_or(DEFAULT_LIMIT, |l| u64::from(l) as usize)
        .clamp(1, MAX_LIMIT);
    let max_depth = b.max_depth.map(u64::from);
    let rooms = s
        .rooms
        .hierarchy(&me.user_id, &b.room_id, max_depth, b.suggested_only)?;
    let total = rooms.len();
    let page: Vec<_> = rooms.into_iter().skip(start).take(limit).collect();
    let mut response = get_hierarchy::v1::Response::new();
    response.next_batch = (start + page.len() < total).then(|| (start + page.len()).to_string());
    response.rooms = serde_json::from_value(serde_json::Value::Array(page))?;
    Ok(response.into())
}
