//! `PUT /sendToDevice/{eventType}/{txnId}`.

use axum::extract::State;
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    ephemeral::to_device::Target,
    error::Result,
};

pub async fn send(
    State(s): State<AppState>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<RumaResponse<send_event_to_device::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    let mut messages = Vec::new();
    for (user, devices) in body.messages {
        for (device, content) in devices {
            let target = match device {
                DeviceIdOrAllDevices::DeviceId(device) => Target::Device(device),
                DeviceIdOrAllDevices::AllDevices => Target::AllDevices,
            };
            // Contents pass through untouched (encrypted ones included).
            let content: serde_json::Value = serde_json::from_str(content.json().get())?;
            messages.push((user.clone(), target, content));
        }
    }
    s.to_device.send(
        &me.user_id,
        &me.device_id,
        body.txn_id.as_str(),
        &body.event_type.to_string(),
        messages,
    )?;
    Ok(send_event_to_device::v3::Response::new().into())
}
