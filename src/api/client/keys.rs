//! `/keys/*`: device keys, one-time keys, cross-signing and signatures.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    OneTimeKeyAlgorithm, OwnedOneTimeKeyId, UInt,
    api::client::keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
    serde::Raw,
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    e2ee::SigningKeysUpload,
    error::{Error, Result},
};

pub async fn upload(
    State(s): State<AppState>,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<RumaResponse<upload_keys::v3::Response>> {
    let me = req.identity()?;
    let body = &req.body;
    let one_time = body
        .one_time_keys
        .iter()
        .map(|(id, key)| (id.to_string(), key.json()))
        .collect();
    let fallback = body
        .fallback_keys
        .iter()
        .map(|(id, key)| (id.to_string(), key.json()))
        .collect();
    let counts = s.e2ee.upload_keys(
        &me.user_id,
        &me.device_id,
        body.device_keys.as_ref().map(Raw::json),
        &one_time,
        &fallback,
    )?;
    let counts = counts
        .into_iter()
        .map(|(algorithm, n)| {
            (
                OneTimeKeyAlgorithm::from(algorithm),
                UInt::new_saturating(n),
            )
        })
        .collect();
    Ok(upload_keys::v3::Response::new(counts).into())
}

pub async fn query(
    State(s): State<AppState>,
    req: Ruma<get_keys::v3::Request>,
) -> Result<RumaResponse<get_keys::v3::Response>> {
    let me = req.identity()?;
    let found = s.e2ee.query(&me.user_id, &req.body.device_keys)?;
    let mut response = get_keys::v3::Response::new();
    response.failures = found.failures;
    response.device_keys = found
        .device_keys
        .into_iter()
        .map(|(user, devices)| {
            let devices = devices
                .into_iter()
                .map(|(device, keys)| (device, Raw::from_json(keys)))
                .collect();
            (user, devices)
        })
        .collect();
    let raw = |keys: BTreeMap<_, _>| {
        keys.into_iter()
            .map(|(user, key)| (user, Raw::from_json(key)))
            .collect()
    };
    response.master_keys = raw(found.master_keys);
    response.self_signing_keys = raw(found.self_signing_keys);
    response.user_signing_keys = raw(found.user_signing_keys);
    Ok(response.into())
}

pub async fn claim(
    State(s): State<AppState>,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<RumaResponse<claim_keys::v3::Response>> {
    req.identity()?;
    let wanted = req
        .body
        .one_time_keys
        .iter()
        .map(|(user, devices)| {
            let devices = devices
                .iter()
                .map(|(device, algorithm)| (device.clone(), algorithm.to_string()))
                .collect();
            (user.clone(), devices)
        })
        .collect();
    let claimed = s.e2ee.claim(&wanted)?;
    let mut one_time_keys = BTreeMap::new();
    for (user, devices) in claimed.one_time_keys {
        let mut by_device = BTreeMap::new();
        for (device, keys) in devices {
            let mut by_id = BTreeMap::new();
            for (id, key) in keys {
                let id = OwnedOneTimeKeyId::try_from(id.as_str())
                    .map_err(|e| Error::internal(format!("stored one-time key id {id}: {e}")))?;
                by_id.insert(id, Raw::from_json(key));
            }
            by_device.insert(device, by_id);
        }
        one_time_keys.insert(user, by_device);
    }
    let mut response = claim_keys::v3::Response::new(one_time_keys);
    response.failures = claimed.failures;
    Ok(response.into())
}

pub async fn changes(
    State(s): State<AppState>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<RumaResponse<get_key_changes::v3::Response>> {
    let me = req.identity()?;
    let from = crate::sync::token::decode(&me.user_id, &req.body.from)?;
    let to = crate::sync::token::decode(&me.user_id, &req.body.to)?;
    let upto = to.min(s.db.visible_count());
    let found = crate::e2ee::device_list_changes(&s, &me.user_id, from, upto)?;
    Ok(get_key_changes::v3::Response::new(
        found.changed.into_iter().collect(),
        found.left.into_iter().collect(),
    )
    .into())
}

pub async fn upload_signing_keys(
    State(s): State<AppState>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<RumaResponse<upload_signing_keys::v3::Response>> {
    let me = req.identity()?.clone();
    let body = req.body;
    let upload = SigningKeysUpload {
        master: body.master_key.map(Raw::into_json),
        self_signing: body.self_signing_key.map(Raw::into_json),
        user_signing: body.user_signing_key.map(Raw::into_json),
    };
    if s.e2ee.check_signing_keys(&me.user_id, &upload)? {
        s.auth
            .confirm_identity(&me.user_id, "device_signing", body.auth)
            .await?;
    }
    s.e2ee.upload_signing_keys(&me.user_id, &upload)?;
    Ok(upload_signing_keys::v3::Response::new().into())
}

pub async fn upload_signatures(
    State(s): State<AppState>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<RumaResponse<upload_signatures::v3::Response>> {
    let me = req.identity()?;
    let signed = req
        .body
        .signed_keys
        .iter()
        .map(|(user, keys)| {
            let keys = keys.iter().map(|(id, key)| (id.to_owned(), key)).collect();
            (user.clone(), keys)
        })
        .collect();
    let failures = s.e2ee.upload_signatures(&me.user_id, &signed)?;
    let mut response = upload_signatures::v3::Response::new();
    for (user, by_key) in failures {
        let mut converted = BTreeMap::new();
        for (key, failure) in by_key {
            converted.insert(key, serde_json::from_value(failure)?);
        }
        response.failures.insert(user, converted);
    }
    Ok(response.into())
}
