//! `/search`, `/context`, `timestamp_to_event`, content reports.

use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt,
    api::{
        Direction as ApiDirection,
        client::{
            context::get_context,
            filter::RoomEventFilter,
            reporting::report_user,
            room::{get_event_by_timestamp, report_content, report_room},
            search::search_events::{
                self,
                v3::{OrderBy, ResultCategories, ResultRoomEvents, SearchResult},
            },
        },
    },
    serde::Raw,
};
use serde_json::json;

use super::relations::raw_list;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
    rooms::EventFilter,
};

pub(super) fn event_filter(f: &RoomEventFilter) -> EventFilter {
    EventFilter {
        types: f.types.clone(),
        not_types: f.not_types.clone(),
        senders: f.senders.clone(),
        not_senders: f.not_senders.clone(),
        lazy_load_members: !f.lazy_load_options.is_disabled(),
    }
}

pub async fn search(
    State(s): State<AppState>,
    req: Ruma<search_events::v3::Request>,
) -> Result<RumaResponse<search_events::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let Some(criteria) = &b.search_categories.room_events else {
        return Ok(search_events::v3::Response::new(ResultCategories::new()).into());
    };
    let joined = s.rooms.joined_rooms(&me.user_id)?;
    let rooms: Vec<OwnedRoomId> = match &criteria.filter.rooms {
        Some(wanted) => joined.into_iter().filter(|r| wanted.contains(r)).collect(),
        None => joined,
    };
    let offset = match &b.next_batch {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid_param("next_batch is not a search token from this server")
            })?,
        None => 0,
    };
    let limit = criteria
        .filter
        .limit
        .map_or(10, |l| usize::try_from(u64::from(l)).unwrap_or(100))
        .clamp(1, 100);
    let recent = criteria.order_by == Some(OrderBy::Recent);
    let (hits, total) = s.rooms.search(
        &me.user_id,
        &rooms,
        &criteria.search_term,
        recent,
        offset,
        limit,
    )?;
    let want_context = criteria.event_context.before_limit > UInt::MIN
        || criteria.event_context.after_limit > UInt::MIN;
    let filter = event_filter(&criteria.filter);
    let mut results = Vec::with_capacity(hits.len());
    for hit in hits {
        let mut result = SearchResult::new();
        result.rank = Some(hit.rank);
        if want_context {
            let event_id: ruma::OwnedEventId =
                serde_json::from_value(hit.event["event_id"].clone())?;
            let before = u64::from(criteria.event_context.before_limit) as usize;
            let after = u64::from(criteria.event_context.after_limit) as usize;
            let ctx = s.rooms.context(
                &hit.room_id,
                (&me.user_id, me.device_id.as_str()),
                &event_id,
                before + after,
                &filter,
            )?;
            let take = |v: &serde_json::Value, n: usize| -> Vec<serde_json::Value> {
                v.as_array()
                    .map(|a| a.iter().take(n).cloned().collect())
                    .unwrap_or_default()
            };
            result.context.events_before = raw_list(take(&ctx["events_before"], before))?;
            result.context.events_after = raw_list(take(&ctx["events_after"], after))?;
            result.context.start = ctx["start"].as_str().map(str::to_owned);
            result.context.end = ctx["end"].as_str().map(str::to_owned);
        }
        result.result = Some(Raw::from_json(serde_json::value::to_raw_value(&hit.event)?));
        results.push(result);
    }
    let mut room_events = ResultRoomEvents::new();
    room_events.count = Some(UInt::new_saturating(total as u64));
    room_events.next_batch =
        (offset + results.len() < total).then(|| format!("o{}", offset + results.len()));
    room_events.highlights = crate::rooms::tokenize(&criteria.search_term);
    room_events.results = results;
    let mut categories = ResultCategories::new();
    categories.room_events = room_events;
    Ok(search_events::v3::Response::new(categories).into())
}

pub async fn context(
    State(s): State<AppState>,
    req: Ruma<get_context::v3::Request>,
) -> Result<RumaResponse<get_context::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let limit = usize::try_from(u64::from(b.limit)).unwrap_or(100).min(100);
    let ctx = s.rooms.context(
        &b.room_id,
        (&me.user_id, me.device_id.as_str()),
        &b.event_id,
        limit,
        &event_filter(&b.filter),
    )?;
    let mut response = get_context::v3::Response::new();
    response.event = Some(Raw::from_json(serde_json::value::to_raw_value(
        &ctx["event"],
    )?));
    response.events_before =
        raw_list(ctx["events_before"].as_array().cloned().unwrap_or_default())?;
    response.events_after = raw_list(ctx["events_after"].as_array().cloned().unwrap_or_default())?;
    response.state = raw_list(ctx["state"].as_array().cloned().unwrap_or_default())?;
    response.start = ctx["start"].as_str().map(str::to_owned);
    response.end = ctx["end"].as_str().map(str::to_owned);
    Ok(response.into())
}

pub async fn timestamp_to_event(
    State(s): State<AppState>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<RumaResponse<get_event_by_timestamp::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let forward = b.dir == ApiDirection::Forward;
    let (event_id, ts) =
        s.rooms
            .event_at_timestamp(&b.room_id, &me.user_id, u64::from(b.ts.get()), forward)?;
    let event_id =
        ruma::OwnedEventId::try_from(event_id).map_err(|e| Error::internal(e.to_string()))?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)),
    )
    .into())
}

pub async fn report_event(
    State(s): State<AppState>,
    req: Ruma<report_content::v3::Request>,
) -> Result<RumaResponse<report_content::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    // Only what the reporter can see can be reported (404 otherwise, as the spec asks).
    s.rooms.event_for(
        &b.room_id,
        &b.event_id,
        (&me.user_id, me.device_id.as_str()),
    )?;
    s.rooms.report(
        &me.user_id,
        json!({ "room_id": b.room_id, "event_id": b.event_id }),
        b.reason.as_deref(),
    )?;
    Ok(report_content::v3::Response::new().into())
}

pub async fn report_room(
    State(s): State<AppState>,
    req: Ruma<report_room::v3::Request>,
) -> Result<RumaResponse<report_room::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    s.rooms.require_meta(&b.room_id)?;
    s.rooms.report(
        &me.user_id,
        json!({ "room_id": b.room_id }),
        Some(&b.reason),
    )?;
    Ok(report_room::v3::Response::new().into())
}

pub async fn report_user(
    State(s): State<AppState>,
    req: Ruma<report_user::v3::Request>,
) -> Result<RumaResponse<report_user::v3::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    if s.users.is_local(&b.user_id) && s.users.account(&b.user_id)?.is_none() {
        return Err(Error::not_found("No such user"));
    }
    s.rooms.report(
        &me.user_id,
        json!({ "user_id": b.user_id }),
        Some(&b.reason),
    )?;
    Ok(report_user::v3::Response::new().into())
}
