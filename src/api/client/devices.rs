use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
    api::client::device::{
        self, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::{Error, Result},
    users::DeviceRecord,
};

fn to_api(device_id: OwnedDeviceId, record: DeviceRecord) -> device::Device {
    let mut d = device::Device::new(device_id);
    d.display_name = record.display_name;
    d.last_seen_ip = record.last_seen_ip;
    d.last_seen_ts = record
        .last_seen_ts
        .map(|ts| MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)));
    d
}

fn unknown_device() -> Error {
    Error::not_found("You have no device with that id")
}

pub async fn list(
    State(s): State<AppState>,
    req: Ruma<get_devices::v3::Request>,
) -> Result<RumaResponse<get_devices::v3::Response>> {
    let me = req.identity()?;
    let devices = s
        .users
        .devices(&me.user_id)?
        .into_iter()
        .map(|(id, r)| to_api(id, r))
        .collect();
    Ok(get_devices::v3::Response::new(devices).into())
}

pub async fn get(
    State(s): State<AppState>,
    req: Ruma<get_device::v3::Request>,
) -> Result<RumaResponse<get_device::v3::Response>> {
    let me = req.identity()?;
    let device_id = &req.body.device_id;
    let record = s
        .users
        .device(&me.user_id, device_id)?
        .ok_or_else(unknown_device)?;
    Ok(get_device::v3::Response::new(to_api(device_id.clone(), record)).into())
}

pub async fn update(
    State(s): State<AppState>,
    req: Ruma<update_device::v3::Request>,
) -> Result<RumaResponse<update_device::v3::Response>> {
    let me = req.identity()?;
    if !s.users.set_device_display_name(
        &me.user_id,
        &req.body.device_id,
        req.body.display_name.clone(),
    )? {
        return Err(unknown_device());
    }
    Ok(update_device::v3::Response::new().into())
}

pub async fn delete(
    State(s): State<AppState>,
    req: Ruma<delete_device::v3::Request>,
) -> Result<RumaResponse<delete_device::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    if s.users.device(&me.user_id, &body.device_id)?.is_none() {
        return Err(unknown_device());
    }
    s.auth
        .delete_devices(&me.user_id, &[body.device_id], body.auth)
        .await?;
    Ok(delete_device::v3::Response::new().into())
}

pub async fn delete_many(
    State(s): State<AppState>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<RumaResponse<delete_devices::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    s.auth
        .delete_devices(&me.user_id, &body.devices, body.auth)
        .await?;
    Ok(delete_devices::v3::Response::new().into())
}
