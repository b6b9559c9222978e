//! Dehydrated devices (MSC3814, unstable prefix `org.matrix.msc3814.v1`).

use axum::extract::State;
use ruma::{
    api::client::dehydrated_device::{
        delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
    },
    serde::Raw,
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    e2ee::NewDehydratedDevice,
    error::{Error, Result},
};

pub async fn put(
    State(s): State<AppState>,
    req: Ruma<put_dehydrated_device::unstable::Request>,
) -> Result<RumaResponse<put_dehydrated_device::unstable::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    s.e2ee.put_dehydrated_device(
        &me.user_id,
        NewDehydratedDevice {
            device_id: &body.device_id,
            display_name: body.initial_device_display_name.clone(),
            device_data: body.device_data.json(),
            device_keys: body.device_keys.json(),
            one_time_keys: body
                .one_time_keys
                .iter()
                .map(|(id, key)| (id.to_string(), key.json()))
                .collect(),
            fallback_keys: body
                .fallback_keys
                .iter()
                .map(|(id, key)| (id.to_string(), key.json()))
                .collect(),
        },
    )?;
    Ok(put_dehydrated_device::unstable::Response::new(body.device_id.clone()).into())
}

pub async fn get(
    State(s): State<AppState>,
    req: Ruma<get_dehydrated_device::unstable::Request>,
) -> Result<RumaResponse<get_dehydrated_device::unstable::Response>> {
    let me = req.identity()?;
    let record = s.e2ee.dehydrated_device(&me.user_id)?;
    Ok(get_dehydrated_device::unstable::Response::new(
        record.device_id,
        Raw::from_json(record.device_data),
    )
    .into())
}

pub async fn delete(
    State(s): State<AppState>,
    req: Ruma<delete_dehydrated_device::unstable::Request>,
) -> Result<RumaResponse<delete_dehydrated_device::unstable::Response>> {
    let me = req.identity()?;
    let device_id = s.e2ee.delete_dehydrated_device(&me.user_id)?;
    Ok(delete_dehydrated_device::unstable::Response::new(device_id).into())
}

/// The dehydrated device's to-device messages. `next_batch` from the previous
/// answer acknowledges (and deletes) everything that answer covered.
pub async fn events(
    State(s): State<AppState>,
    req: Ruma<get_events::unstable::Request>,
) -> Result<RumaResponse<get_events::unstable::Response>> {
    let me = req.identity()?;
    let device = &req.body.device_id;
    s.e2ee.require_dehydrated(&me.user_id, device)?;
    let after = match req.body.next_batch.as_deref() {
        Some(token) => token.parse::<u64>().map_err(|_| {
            Error::invalid_param(format!("'{token}' is not a next_batch of this endpoint"))
        })?,
        None => 0,
    };
    s.to_device.acknowledge(&me.user_id, device, after)?;
    let upto = s.db.visible_count().max(after);
    let events = s
        .to_device
        .pending(&me.user_id, device, after, upto)?
        .into_iter()
        .map(|event| Ok(Raw::from_json(serde_json::value::to_raw_value(&event)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut response = get_events::unstable::Response::new(events);
    response.next_batch = Some(upto.to_string());
    Ok(response.into())
}
