//! `POST /user_directory/search`.

use axum::extract::State;
use ruma::api::client::user_directory::search_users;

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::Result,
};

/// Results per search at most, whatever the client asks.
const MAX_LIMIT: usize = 50;

pub async fn search(
    State(s): State<AppState>,
    req: Ruma<search_users::v3::Request>,
) -> Result<RumaResponse<search_users::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let limit = (u64::from(b.limit) as usize).clamp(1, MAX_LIMIT);
    let (found, limited) = s.rooms.search_users(&me.user_id, &b.search_term, limit)?;
    let mut results = Vec::with_capacity(found.len());
    for user in found {
        // Deactivated accounts are not offered.
        if user.user_id.server_name() == s.config.server_name.as_str()
            && !s.users.is_active(&user.user_id)?
        {
            continue;
        }
        let mut entry = search_users::v3::User::new(user.user_id);
        entry.display_name = user.display_name;
        entry.avatar_url = user.avatar_url.map(Into::into);
        results.push(entry);
    }
    Ok(search_users::v3::Response::new(results, limited).into())
}
