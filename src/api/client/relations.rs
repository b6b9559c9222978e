//! `/relations` (three path forms) and `/threads`.

use axum::extract::State;
use ruma::{
    OwnedEventId, OwnedRoomId, UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    serde::Raw,
};
use serde_json::Value;

use super::rooms::page_limit;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    auth::Identity,
    error::Result,
};

struct Query<'a> {
    room: &'a OwnedRoomId,
    event: &'a OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

type Page<T> = (Vec<Raw<T>>, Option<String>, Option<UInt>);

fn relations<T>(s: &AppState, me: &Identity, q: Query<'_>) -> Result<Page<T>> {
    let (chunk, next, depth) = s.rooms.relations_for(
        q.room,
        (&me.user_id, me.device_id.as_str()),
        q.event,
        q.rel_type.as_deref(),
        q.event_type.as_deref(),
        q.from,
        q.to,
        q.dir == Direction::Backward,
        page_limit(q.limit),
        q.recurse,
    )?;
    let chunk = raw_list(chunk)?;
    Ok((
        chunk,
        next,
        q.recurse.then(|| UInt::new_saturating(depth as u64)),
    ))
}

pub(super) fn raw_list<T>(values: Vec<Value>) -> Result<Vec<Raw<T>>> {
    values
        .into_iter()
        .map(|v| Ok(Raw::from_json(serde_json::value::to_raw_value(&v)?)))
        .collect()
}

pub async fn all(
    State(s): State<AppState>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<RumaResponse<get_relating_events::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let q = Query {
        room: &b.room_id,
        event: &b.event_id,
        rel_type: None,
        event_type: None,
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: b.limit,
        recurse: b.recurse,
    };
    let (chunk, next, depth) = relations(&s, me, q)?;
    let mut response = get_relating_events::v1::Response::new(chunk);
    response.next_batch = next;
    response.recursion_depth = depth;
    Ok(response.into())
}

pub async fn by_rel_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let q = Query {
        room: &b.room_id,
        event: &b.event_id,
        rel_type: Some(b.rel_type.to_string()),
        event_type: None,
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: b.limit,
        recurse: b.recurse,
    };
    let (chunk, next, depth) = relations(&s, me, q)?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(chunk);
    response.next_batch = next;
    response.recursion_depth = depth;
    Ok(response.into())
}

pub async fn by_rel_and_event_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type_and_event_type::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let q = Query {
        room: &b.room_id,
        event: &b.event_id,
        rel_type: Some(b.rel_type.to_string()),
        event_type: Some(b.event_type.to_string()),
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: b.limit,
        recurse: b.recurse,
    };
    let (chunk, next, depth) = relations(&s, me, q)?;
    let mut response = get_relating_events_with_rel_type_and_event_type::v1::Response::new(chunk);
    response.next_batch = next;
    response.recursion_depth = depth;
    Ok(response.into())
}

pub async fn threads(
    State(s): State<AppState>,
    req: Ruma<get_threads::v1::Request>,
) -> Result<RumaResponse<get_threads::v1::Response>> {
    let me = req.identity()?;
    let b = &req.body;
    let participated = b.include == IncludeThreads::Participated;
    let (chunk, next) = s.rooms.threads_for(
        &b.room_id,
        (&me.user_id, me.device_id.as_str()),
        participated,
        b.from.as_deref(),
        page_limit(b.limit),
    )?;
    let mut response = get_threads::v1::Response::new(raw_list(chunk)?);
    response.next_batch = next;
    Ok(response.into())
}
