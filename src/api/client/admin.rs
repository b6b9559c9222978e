//! `GET /admin/whois/{userId}`: a user's devices and where they were last
//! seen. bigd has no server admins, so users may ask about themselves only.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::admin::get_user_info::{
        self,
        v3::{ConnectionInfo, DeviceInfo, SessionInfo},
    },
};

use super::ensure_self;
use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::Result,
};

pub async fn whois(
    State(s): State<AppState>,
    req: Ruma<get_user_info::v3::Request>,
) -> Result<RumaResponse<get_user_info::v3::Response>> {
    let me = req.identity()?;
    ensure_self(&me.user_id, &req.body.user_id, "look up the sessions")?;
    let mut devices = BTreeMap::new();
    for (device, record) in s.users.devices(&me.user_id)? {
        let mut connection = ConnectionInfo::new();
        connection.ip = record.last_seen_ip.clone();
        connection.last_seen = record
            .last_seen_ts
            .map(|ts| MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)));
        let mut session = SessionInfo::new();
        session.connections = vec![connection];
        let mut info = DeviceInfo::new();
        info.sessions = vec![session];
        devices.insert(device.to_string(), info);
    }
    let mut response = get_user_info::v3::Response::new();
    response.user_id = Some(me.user_id.clone());
    response.devices = devices;
    Ok(response.into())
}
