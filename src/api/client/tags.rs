//! Room tags (favourites, low priority, `u.*`): the room account data `m.tag`,
//! `{"tags": {name: {order?}}}`, edited one tag at a time.

use axum::extract::State;
use ruma::{
    OwnedRoomId, UserId,
    api::client::tag::{create_tag, delete_tag, get_tags},
    events::tag::Tags,
};
use serde_json::{Map, Value, json};

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
};

const TAG_TYPE: &str = "m.tag";
/// Longest tag name accepted, in bytes (Synapse's limit).
const MAX_TAG: usize = 255;

fn stored_tags(s: &AppState, user: &UserId, room: &OwnedRoomId) -> Result<Map<String, Value>> {
    let Some(raw) = s.users.account_data(user, Some(room), TAG_TYPE)? else {
        return Ok(Map::new());
    };
    let content: Value = serde_json::from_str(raw.get())?;
    Ok(content["tags"].as_object().cloned().unwrap_or_default())
}

fn store_tags(
    s: &AppState,
    user: &UserId,
    room: &OwnedRoomId,
    tags: Map<String, Value>,
) -> Result<()> {
    let content = serde_json::value::to_raw_value(&json!({ "tags": tags }))?;
    s.users
        .set_account_data(user, Some(room), TAG_TYPE, content)
}

pub async fn get(
    State(s): State<AppState>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<RumaResponse<get_tags::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    ensure_self(&me.user_id, &b.user_id, "read the room tags")?;
    let tags: Tags =
        serde_json::from_value(Value::Object(stored_tags(&s, &b.user_id, &b.room_id)?))?;
    Ok(get_tags::v3::Response::new(tags).into())
}

pub async fn put(
    State(s): State<AppState>,
    req: Ruma<create_tag::v3::Request>,
) -> Result<RumaResponse<create_tag::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    ensure_self(&me.user_id, &b.user_id, "change the room tags")?;
    if b.tag.is_empty() || b.tag.len() > MAX_TAG {
        return Err(Error::invalid_param(format!(
            "A tag name is 1 to {MAX_TAG} bytes long"
        )));
    }
    let _writing = s.users.account_data_lock();
    let mut tags = stored_tags(&s, &b.user_id, &b.room_id)?;
    tags.insert(b.tag.clone(), serde_json::to_value(&b.tag_info)?);
    store_tags(&s, &b.user_id, &b.room_id, tags)?;
    Ok(create_tag::v3::Response::new().into())
}

pub async fn delete(
    State(s): State<AppState>,
    req: Ruma<delete_tag::v3::Request>,
) -> Result<RumaResponse<delete_tag::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    ensure_self(&me.user_id, &b.user_id, "change the room tags")?;
    let _writing = s.users.account_data_lock();
    let mut tags = stored_tags(&s, &b.user_id, &b.room_id)?;
    // Deleting a tag the room does not have is not an error (as Synapse).
    if tags.remove(&b.tag).is_some() {
        store_tags(&s, &b.user_id, &b.room_id, tags)?;
    }
    Ok(delete_tag::v3::Response::new().into())
}
