//! `/room_keys/*`: server-side key backup.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version,
    },
    serde::Raw,
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    e2ee::BackupKeys,
    error::{Error, Result},
};

fn count(n: u64) -> UInt {
    UInt::new_saturating(n)
}

pub async fn create_version(
    State(s): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<RumaResponse<create_backup_version::v3::Response>> {
    let me = req.identity()?;
    let version = s
        .e2ee
        .create_backup(&me.user_id, req.body.algorithm.json())?;
    Ok(create_backup_version::v3::Response::new(version).into())
}

pub async fn latest_version(
    State(s): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<RumaResponse<get_latest_backup_info::v3::Response>> {
    let me = req.identity()?;
    let info = s.e2ee.backup_info(&me.user_id, None)?;
    Ok(get_latest_backup_info::v3::Response::new(
        Raw::from_json(info.algorithm),
        count(info.count),
        info.etag,
        info.version,
    )
    .into())
}

pub async fn get_version(
    State(s): State<AppState>,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<RumaResponse<get_backup_info::v3::Response>> {
    let me = req.identity()?;
    let info = s.e2ee.backup_info(&me.user_id, Some(&req.body.version))?;
    Ok(get_backup_info::v3::Response::new(
        Raw::from_json(info.algorithm),
        count(info.count),
        info.etag,
        info.version,
    )
    .into())
}

pub async fn update_version(
    State(s): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<RumaResponse<update_backup_version::v3::Response>> {
    let me = req.identity()?;
    s.e2ee
        .update_backup(&me.user_id, &req.body.version, req.body.algorithm.json())?;
    Ok(update_backup_version::v3::Response::new().into())
}

pub async fn delete_version(
    State(s): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<RumaResponse<delete_backup_version::v3::Response>> {
    let me = req.identity()?;
    s.e2ee.delete_backup(&me.user_id, &req.body.version)?;
    Ok(delete_backup_version::v3::Response::new().into())
}

pub async fn put_keys(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<RumaResponse<add_backup_keys::v3::Response>> {
    let me = req.identity()?;
    let keys = req
        .body
        .rooms
        .iter()
        .map(|(room, backup)| {
            let sessions = backup
                .sessions
                .iter()
                .map(|(id, data)| (id.clone(), data.json()))
                .collect();
            (room.clone(), sessions)
        })
        .collect();
    let (etag, n) = s
        .e2ee
        .put_backup_keys(&me.user_id, &req.body.version, &keys)?;
    Ok(add_backup_keys::v3::Response::new(etag, count(n)).into())
}

pub async fn put_room_keys(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<add_backup_keys_for_room::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let sessions = body
        .sessions
        .iter()
        .map(|(id, data)| (id.clone(), data.json()))
        .collect();
    let keys = BTreeMap::from([(body.room_id.clone(), sessions)]);
    let (etag, n) = s.e2ee.put_backup_keys(&me.user_id, &body.version, &keys)?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count(n)).into())
}

pub async fn put_session_key(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<add_backup_keys_for_session::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let sessions = BTreeMap::from([(body.session_id.clone(), body.session_data.json())]);
    let keys = BTreeMap::from([(body.room_id.clone(), sessions)]);
    let (etag, n) = s.e2ee.put_backup_keys(&me.user_id, &body.version, &keys)?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count(n)).into())
}

fn rooms(keys: BackupKeys) -> BTreeMap<ruma::OwnedRoomId, RoomKeyBackup> {
    keys.into_iter()
        .map(|(room, sessions)| {
            let sessions = sessions
                .into_iter()
                .map(|(id, data)| (id, Raw::from_json(data)))
                .collect();
            (room, RoomKeyBackup::new(sessions))
        })
        .collect()
}

pub async fn get_keys(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<RumaResponse<get_backup_keys::v3::Response>> {
    let me = req.identity()?;
    let keys = s
        .e2ee
        .backup_keys(&me.user_id, &req.body.version, None, None)?;
    Ok(get_backup_keys::v3::Response::new(rooms(keys)).into())
}

pub async fn get_room_keys(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<get_backup_keys_for_room::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let keys = s
        .e2ee
        .backup_keys(&me.user_id, &body.version, Some(&body.room_id), None)?;
    let sessions = rooms(keys)
        .remove(&body.room_id)
        .map(|r| r.sessions)
        .unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions).into())
}

pub async fn get_session_key(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<get_backup_keys_for_session::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let keys = s.e2ee.backup_keys(
        &me.user_id,
        &body.version,
        Some(&body.room_id),
        Some(&body.session_id),
    )?;
    let data = rooms(keys)
        .remove(&body.room_id)
        .and_then(|mut r| r.sessions.remove(&body.session_id))
        .ok_or_else(|| Error::not_found("No key for that session in this backup"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(data).into())
}

pub async fn delete_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys::v3::Response>> {
    let me = req.identity()?;
    let (etag, n) = s
        .e2ee
        .delete_backup_keys(&me.user_id, &req.body.version, None, None)?;
    Ok(delete_backup_keys::v3::Response::new(etag, count(n)).into())
}

pub async fn delete_room_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys_for_room::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let (etag, n) =
        s.e2ee
            .delete_backup_keys(&me.user_id, &body.version, Some(&body.room_id), None)?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count(n)).into())
}

pub async fn delete_session_key(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys_for_session::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let (etag, n) = s.e2ee.delete_backup_keys(
        &me.user_id,
        &body.version,
        Some(&body.room_id),
        Some(&body.session_id),
    )?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, count(n)).into())
}
