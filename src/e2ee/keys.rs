//! Device keys, one-time and fallback keys, cross-signing keys and signatures.

use std::collections::BTreeMap;

use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    encryption::{CrossSigningKey, DeviceKeys, OneTimeKey},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json, value::RawValue};

use super::{
    E2ee,
    signatures::{self, merge_signatures, signed_content},
    stage_key_change,
};
use crate::{
    error::{Error, Result},
    storage::{
        Batch, JsonValue, Raw, USERIDDEVICEID_DEVICEKEYS, USERIDDEVICEIDALGORITHM_FALLBACKKEY,
        USERIDDEVICEIDKEYID_ONETIMEKEY, USERIDKEYIDSIGNER_SIGNATURES, USERIDKIND_CROSSSIGNINGKEY,
        prefix,
    },
};

/// A device's fallback key for one algorithm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackKeyRecord {
    /// `algorithm:key id`.
    pub key_id: String,
    pub key: Box<RawValue>,
    /// Handed out by a claim since it was uploaded.
    pub used: bool,
}

impl JsonValue for FallbackKeyRecord {}

/// Keys of an upload, checked.
#[derive(Debug)]
pub(super) struct CheckedUpload {
    device_keys: Option<Map<String, Value>>,
    one_time: Vec<(String, Value)>,
    fallback: Vec<(String, Value)>,
}

/// What `/keys/query` answers.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Box<RawValue>>>,
    pub master_keys: BTreeMap<OwnedUserId, Box<RawValue>>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Box<RawValue>>,
    pub user_signing_keys: BTreeMap<OwnedUserId, Box<RawValue>>,
    pub failures: BTreeMap<String, Value>,
}

/// What `/keys/claim` answers: user -> device -> key id -> key.
#[derive(Debug, Default)]
pub struct ClaimResult {
    pub one_time_keys:
        BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Box<RawValue>>>>,
    pub failures: BTreeMap<String, Value>,
}

/// Cross-signing keys uploaded together (each as the client sent it).
#[derive(Debug, Default)]
pub struct SigningKeysUpload {
    pub master: Option<Box<RawValue>>,
    pub self_signing: Option<Box<RawValue>>,
    pub user_signing: Option<Box<RawValue>>,
}

const MASTER: &str = "master";
const SELF_SIGNING: &str = "self_signing";
const USER_SIGNING: &str = "user_signing";

fn object_of(raw: &RawValue, what: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(raw.get())
        .map_err(|_| Error::bad_json(format!("{what} must be a JSON object")))
}

fn to_raw(object: &Map<String, Value>) -> Result<Box<RawValue>> {
    Ok(serde_json::value::to_raw_value(object)?)
}

fn stored_object(raw: &Raw) -> Result<Map<String, Value>> {
    Ok(serde_json::from_slice(&raw.0)?)
}

/// The single `ed25519:<public key>` entry of a cross-signing key.
fn cross_signing_public_key(key: &Map<String, Value>) -> Option<(String, String)> {
    let keys = key.get("keys")?.as_object()?;
    let (id, value) = keys.iter().next()?;
    Some((id.clone(), value.as_str()?.to_owned()))
}

/// A signature map must be `{user: {key id: string}}`.
fn check_signatures_shape(object: &Map<String, Value>, what: &str) -> Result<()> {
    let Some(signatures) = object.get("signatures") else {
        return Ok(());
    };
    let ok = signatures.as_object().is_some_and(|by_user| {
        by_user.values().all(|sigs| {
            sigs.as_object()
                .is_some_and(|sigs| sigs.values().all(Value::is_string))
        })
    });
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(format!(
            "The signatures of {what} must map user ids to {{key id: signature}}"
        )))
    }
}

impl E2ee {
    // --- device keys, one-time keys, fallback keys ---

    /// `/keys/upload`: returns the device's one-time key counts per algorithm.
    pub fn upload_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<&RawValue>,
        one_time_keys: &BTreeMap<String, &RawValue>,
        fallback_keys: &BTreeMap<String, &RawValue>,
    ) -> Result<BTreeMap<String, u64>> {
        let upload = self.check_upload(user, device, device_keys, one_time_keys, fallback_keys)?;
        let _guard = self.keys_lock.lock();
        let mut batch = self.db.batch();
        self.stage_upload(&mut batch, user, device, upload, false)?;
        if !batch.is_empty() {
            batch.commit()?;
        }
        drop(_guard);
        self.one_time_key_counts(user, device)
    }

    /// Checks keys of a `/keys/upload` (or a dehydrated device) before anything is stored.
    pub(super) fn check_upload(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<&RawValue>,
        one_time_keys: &BTreeMap<String, &RawValue>,
        fallback_keys: &BTreeMap<String, &RawValue>,
    ) -> Result<CheckedUpload> {
        let device_keys = device_keys
            .map(|raw| self.check_device_keys(user, device, raw))
            .transpose()?;
        let one_time = one_time_keys
            .iter()
            .map(|(id, raw)| Ok((id.clone(), check_one_time_key(user, device, id, raw)?)))
            .collect::<Result<_>>()?;
        let fallback = fallback_keys
            .iter()
            .map(|(id, raw)| Ok((id.clone(), check_one_time_key(user, device, id, raw)?)))
            .collect::<Result<_>>()?;
        Ok(CheckedUpload {
            device_keys,
            one_time,
            fallback,
        })
    }

    /// Stages checked keys; the caller holds `keys_lock`.
    pub(super) fn stage_upload(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
        upload: CheckedUpload,
        fresh: bool,
    ) -> Result<()> {
        if let Some(mut new) = upload.device_keys {
            if fresh {
                new.remove("unsigned");
                batch.put(
                    USERIDDEVICEID_DEVICEKEYS,
                    &(user.to_owned(), device.to_owned()),
                    &Raw(serde_json::to_vec(&new)?),
                );
            } else {
                self.stage_device_keys(batch, user, device, new)?;
            }
        }
        for (id, key) in upload.one_time {
            let row = (user.to_owned(), device.to_owned(), id.clone());
            let existing = match fresh {
                true => None,
                false => self.db.get(USERIDDEVICEIDKEYID_ONETIMEKEY, &row)?,
            };
            if let Some(existing) = existing {
                if serde_json::from_slice::<Value>(&existing.0)? != key {
                    return Err(Error::invalid_param(format!(
                        "The one-time key {id} already exists with another value"
                    )));
                }
                continue;
            }
            batch.put(
                USERIDDEVICEIDKEYID_ONETIMEKEY,
                &row,
                &Raw(serde_json::to_vec(&key)?),
            );
        }
        for (id, key) in upload.fallback {
            let algorithm = id
                .split_once(':')
                .map_or(id.as_str(), |(a, _)| a)
                .to_owned();
            let row = (user.to_owned(), device.to_owned(), algorithm);
            let key = serde_json::value::to_raw_value(&key)?;
            // The same key uploaded again keeps its state; a new one is unused.
            let used = !fresh
                && self
                    .db
                    .get(USERIDDEVICEIDALGORITHM_FALLBACKKEY, &row)?
                    .is_some_and(|old| old.used && old.key_id == id && old.key.get() == key.get());
            batch.put(
                USERIDDEVICEIDALGORITHM_FALLBACKKEY,
                &row,
                &FallbackKeyRecord {
                    key_id: id,
                    key,
                    used,
                },
            );
        }
        Ok(())
    }

    fn check_device_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        raw: &RawValue,
    ) -> Result<Map<String, Value>> {
        serde_json::from_str::<DeviceKeys>(raw.get())
            .map_err(|e| Error::bad_json(format!("device_keys has the wrong shape: {e}")))?;
        let object = object_of(raw, "device_keys")?;
        if object.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
            return Err(Error::invalid_param(
                "device_keys.user_id must be your own user id",
            ));
        }
        if object.get("device_id").and_then(Value::as_str) != Some(device.as_str()) {
            return Err(Error::invalid_param(
                "device_keys.device_id must be the id of the device uploading them",
            ));
        }
        let keys = object
            .get("keys")
            .and_then(Value::as_object)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::bad_json("device_keys.keys must name the device's keys"))?;
        for (id, key) in keys {
            let Some((_, key_device)) = id.split_once(':') else {
                return Err(Error::invalid_param(format!(
                    "The key id {id} is not of the form algorithm:device_id"
                )));
            };
            if key_device != device.as_str() || !key.is_string() {
                return Err(Error::invalid_param(format!(
                    "The key {id} must be a string and name this device"
                )));
            }
        }
        check_signatures_shape(&object, "device_keys")?;
        let self_signed = format!("ed25519:{device}");
        if signatures::signature(&object, user, &self_signed).is_none() {
            return Err(Error::invalid_param(format!(
                "device_keys must carry the device's own signature ({self_signed})"
            )));
        }
        Ok(object)
    }

    /// Stores a device's identity keys; its identity keys cannot change.
    fn stage_device_keys(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
        mut new: Map<String, Value>,
    ) -> Result<()> {
        new.remove("unsigned");
        let row = (user.to_owned(), device.to_owned());
        if let Some(old) = self.db.get(USERIDDEVICEID_DEVICEKEYS, &row)? {
            let old = stored_object(&old)?;
            if old.get("keys") != new.get("keys") {
                return Err(Error::invalid_param(
                    "This device already has different identity keys; log in as a new device to use new keys",
                ));
            }
            // Signatures made since (by the self-signing key) stay.
            let mut merged = old.clone();
            merge_signatures(&mut merged, &new);
            if let Some(signatures) = merged.remove("signatures") {
                new.insert("signatures".into(), signatures);
            }
            if old == new {
                return Ok(());
            }
        }
        batch.put(
            USERIDDEVICEID_DEVICEKEYS,
            &row,
            &Raw(serde_json::to_vec(&new)?),
        );
        stage_key_change(&self.db, batch, user)
    }

    /// One-time keys left per algorithm (`device_one_time_keys_count`).
    pub fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        let device_prefix = prefix(&(user.to_owned(), device.to_owned()));
        for row in self.db.iter(
            USERIDDEVICEIDKEYID_ONETIMEKEY,
            &device_prefix,
            &device_prefix,
            true,
        ) {
            let ((_, _, id), _) = row?;
            let algorithm = id.split_once(':').map_or(id.as_str(), |(a, _)| a);
            *counts.entry(algorithm.to_owned()).or_insert(0) += 1;
        }
        // Clients read a missing count as "unknown": say 0 for the usual one.
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        Ok(counts)
    }

    /// Algorithms whose fallback key has not been handed out.
    pub fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<String>> {
        let rows = self.db.scan_prefix(
            USERIDDEVICEIDALGORITHM_FALLBACKKEY,
            &prefix(&(user.to_owned(), device.to_owned())),
        )?;
        Ok(rows
            .into_iter()
            .filter(|(_, record)| !record.used)
            .map(|((_, _, algorithm), _)| algorithm)
            .collect())
    }

    /// `/keys/claim`: a one-time key per requested device, else its fallback key.
    pub fn claim(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<ClaimResult> {
        let mut result = ClaimResult::default();
        let _guard = self.claim_lock.lock();
        let mut batch = self.db.batch();
        for (user, devices) in wanted {
            if !self.users.is_local(user) {
                result.failures.insert(
                    user.server_name().to_string(),
                    json!({ "status": 503, "message": "This server does not query other servers for keys" }),
                );
                continue;
            }
            for (device, algorithm) in devices {
                let mut key_prefix = prefix(&(user.clone(), device.clone()));
                key_prefix.extend_from_slice(format!("{algorithm}:").as_bytes());
                let first = self
                    .db
                    .iter(
                        USERIDDEVICEIDKEYID_ONETIMEKEY,
                        &key_prefix,
                        &key_prefix,
                        true,
                    )
                    .next()
                    .transpose()?;
                let claimed = if let Some((row, Raw(key))) = first {
                    batch.delete(USERIDDEVICEIDKEYID_ONETIMEKEY, &row);
                    Some((
                        row.2,
                        RawValue::from_string(String::from_utf8_lossy(&key).into_owned())?,
                    ))
                } else {
                    let row = (user.clone(), device.clone(), algorithm.clone());
                    match self.db.get(USERIDDEVICEIDALGORITHM_FALLBACKKEY, &row)? {
                        Some(mut record) => {
                            let key = record.key.clone();
                            if !record.used {
                                record.used = true;
                                batch.put(USERIDDEVICEIDALGORITHM_FALLBACKKEY, &row, &record);
                            }
                            Some((record.key_id, key))
                        }
                        None => None,
                    }
                };
                if let Some((id, key)) = claimed {
                    result
                        .one_time_keys
                        .entry(user.clone())
                        .or_default()
                        .entry(device.clone())
                        .or_default()
                        .insert(id, key);
                }
            }
        }
        if !batch.is_empty() {
            batch.commit()?;
        }
        Ok(result)
    }

    // --- query ---

    /// `/keys/query` as `requester`: device keys (all devices when the list is
    /// empty) and cross-signing keys, with the signatures the requester may see.
    pub fn query(
        &self,
        requester: &UserId,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueryResult> {
        let mut result = QueryResult::default();
        for (user, devices) in wanted {
            if !self.users.is_local(user) {
                result.failures.insert(
                    user.server_name().to_string(),
                    json!({ "status": 503, "message": "This server does not query other servers for keys" }),
                );
                continue;
            }
            let known = self.users.devices(user)?;
            let mut found = BTreeMap::new();
            for (device, record) in known {
                if !devices.is_empty() && !devices.contains(&device) {
                    continue;
                }
                let Some(raw) = self
                    .db
                    .get(USERIDDEVICEID_DEVICEKEYS, &(user.clone(), device.clone()))?
                else {
                    continue;
                };
                let mut keys = stored_object(&raw)?;
                self.add_signatures_by(&mut keys, user, device.as_str(), requester)?;
                let mut unsigned = Map::new();
                if let Some(name) = record.display_name {
                    unsigned.insert("device_display_name".into(), json!(name));
                }
                keys.insert("unsigned".into(), Value::Object(unsigned));
                found.insert(device, to_raw(&keys)?);
            }
            // Every user asked about gets an entry, so clients know they exist.
            result.device_keys.insert(user.clone(), found);
            if let Some(mut master) = self.cross_signing_key(user, MASTER)? {
                if let Some((_, public)) = cross_signing_public_key(&master) {
                    self.add_signatures_by(&mut master, user, &public, requester)?;
                }
                result.master_keys.insert(user.clone(), to_raw(&master)?);
            }
            if let Some(key) = self.cross_signing_key(user, SELF_SIGNING)? {
                result.self_signing_keys.insert(user.clone(), to_raw(&key)?);
            }
            if user == requester
                && let Some(key) = self.cross_signing_key(user, USER_SIGNING)?
            {
                result.user_signing_keys.insert(user.clone(), to_raw(&key)?);
            }
        }
        Ok(result)
    }

    /// Merges the signatures `requester` made on another user's key.
    fn add_signatures_by(
        &self,
        key: &mut Map<String, Value>,
        owner: &UserId,
        key_id: &str,
        requester: &UserId,
    ) -> Result<()> {
        if owner == requester {
            return Ok(());
        }
        let row = (owner.to_owned(), key_id.to_owned(), requester.to_owned());
        if let Some(Raw(sigs)) = self.db.get(USERIDKEYIDSIGNER_SIGNATURES, &row)? {
            let sigs: Value = serde_json::from_slice(&sigs)?;
            let mut extra = Map::new();
            extra.insert("signatures".into(), json!({ requester.as_str(): sigs }));
            merge_signatures(key, &extra);
        }
        Ok(())
    }

    fn cross_signing_key(&self, user: &UserId, kind: &str) -> Result<Option<Map<String, Value>>> {
        self.db
            .get(
                USERIDKIND_CROSSSIGNINGKEY,
                &(user.to_owned(), kind.to_owned()),
            )?
            .map(|raw| stored_object(&raw))
            .transpose()
    }

    // --- cross-signing ---

    /// Checks an upload of cross-signing keys; returns whether it needs
    /// user-interactive auth: any change once a master key exists does (the
    /// first upload does not, so a new account can set up cross-signing).
    pub fn check_signing_keys(&self, user: &UserId, upload: &SigningKeysUpload) -> Result<bool> {
        let master = match &upload.master {
            Some(raw) => Some(check_cross_signing_key(user, raw, MASTER)?),
            None => None,
        };
        let current_master = self.cross_signing_key(user, MASTER)?;
        let signer = master.as_ref().or(current_master.as_ref());
        for (raw, usage) in [
            (&upload.self_signing, SELF_SIGNING),
            (&upload.user_signing, USER_SIGNING),
        ] {
            let Some(raw) = raw else { continue };
            let key = check_cross_signing_key(user, raw, usage)?;
            let signer = signer.ok_or_else(|| {
                Error::invalid_param(format!(
                    "Upload a master key before (or with) the {usage} key"
                ))
            })?;
            let (master_id, master_public) = cross_signing_public_key(signer)
                .ok_or_else(|| Error::internal("stored master key without a key"))?;
            signatures::verify(&key, user, &master_id, &master_public).map_err(|e| {
                Error::invalid_param(format!(
                    "The {usage} key must be signed by the master key: {e}"
                ))
            })?;
        }
        let Some(_) = current_master else {
            return Ok(false);
        };
        for (raw, kind) in [
            (&upload.master, MASTER),
            (&upload.self_signing, SELF_SIGNING),
            (&upload.user_signing, USER_SIGNING),
        ] {
            let Some(raw) = raw else { continue };
            let new = object_of(raw, kind)?;
            if self.cross_signing_key(user, kind)?.as_ref() != Some(&new) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores checked cross-signing keys (`check_signing_keys` first).
    pub fn upload_signing_keys(&self, user: &UserId, upload: &SigningKeysUpload) -> Result<()> {
        let _guard = self.keys_lock.lock();
        let mut batch = self.db.batch();
        for (raw, kind) in [
            (&upload.master, MASTER),
            (&upload.self_signing, SELF_SIGNING),
            (&upload.user_signing, USER_SIGNING),
        ] {
            let Some(raw) = raw else { continue };
            let key = object_of(raw, kind)?;
            batch.put(
                USERIDKIND_CROSSSIGNINGKEY,
                &(user.to_owned(), kind.to_owned()),
                &Raw(serde_json::to_vec(&key)?),
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        stage_key_change(&self.db, &mut batch, user)?;
        batch.commit()
    }

    /// `/keys/signatures/upload`: checks each signature `signer` made and stores
    /// the valid ones. Returns failures per user and key id.
    pub fn upload_signatures(
        &self,
        signer: &UserId,
        signed: &BTreeMap<OwnedUserId, BTreeMap<String, &RawValue>>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, Value>>> {
        let _guard = self.keys_lock.lock();
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
        let mut batch = self.db.batch();
        let mut changed = std::collections::BTreeSet::new();
        for (target, keys) in signed {
            for (key_id, raw) in keys {
                let outcome = match object_of(raw, "a signed key") {
                    Ok(object) => self.stage_signature(&mut batch, signer, target, key_id, object),
                    Err(e) => Err(failure("M_BAD_JSON", e.to_string())),
                };
                match outcome {
                    Ok(changed_user) => {
                        changed.insert(changed_user);
                    }
                    Err(failure) => {
                        failures
                            .entry(target.clone())
                            .or_default()
                            .insert(key_id.clone(), failure);
                    }
                }
            }
        }
        for user in changed {
            stage_key_change(&self.db, &mut batch, &user)?;
        }
        if !batch.is_empty() {
            batch.commit()?;
        }
        Ok(failures)
    }

    /// Checks and stages one signed key; returns the user whose keys changed
    /// for others, or a failure object.
    fn stage_signature(
        &self,
        batch: &mut Batch,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        object: Map<String, Value>,
    ) -> std::result::Result<OwnedUserId, Value> {
        let internal = |e: Error| failure("M_UNKNOWN", e.to_string());
        let new_sigs: Map<String, Value> = object
            .get("signatures")
            .and_then(|s| s.get(signer.as_str()))
            .and_then(Value::as_object)
            .cloned()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                failure(
                    "M_INVALID_SIGNATURE",
                    format!("No signature by {signer} on this key"),
                )
            })?;

        if target == signer {
            // The signer's own device (signed by their self-signing key) or
            // their master key (signed by one of their devices).
            let device_row = (target.to_owned(), OwnedDeviceId::from(key_id));
            let (mut stored, row_kind) = if let Some(raw) = self
                .db
                .get(USERIDDEVICEID_DEVICEKEYS, &device_row)
                .map_err(internal)?
            {
                (stored_object(&raw).map_err(internal)?, None)
            } else {
                let master = self
                    .cross_signing_key(target, MASTER)
                    .map_err(internal)?
                    .filter(|m| cross_signing_public_key(m).is_some_and(|(_, p)| p == key_id))
                    .ok_or_else(|| {
                        failure(
                            "M_NOT_FOUND",
                            format!("{target} has no device or master key {key_id}"),
                        )
                    })?;
                (master, Some(MASTER))
            };
            same_key(&stored, &object)?;
            for (sig_key_id, _) in &new_sigs {
                if signatures::signature(&stored, signer, sig_key_id).is_some() {
                    continue;
                }
                let public = match row_kind {
                    None => {
                        let ssk = self
                            .cross_signing_key(signer, SELF_SIGNING)
                            .map_err(internal)?
                            .and_then(|k| cross_signing_public_key(&k))
                            .filter(|(id, _)| id == sig_key_id);
                        ssk.map(|(_, p)| p)
                    }
                    Some(_) => {
                        let device = sig_key_id.strip_prefix("ed25519:").unwrap_or_default();
                        self.db
                            .get(
                                USERIDDEVICEID_DEVICEKEYS,
                                &(signer.to_owned(), OwnedDeviceId::from(device)),
                            )
                            .map_err(internal)?
                            .and_then(|raw| stored_object(&raw).ok())
                            .and_then(|d| {
                                d.get("keys")?
                                    .get(sig_key_id.as_str())?
                                    .as_str()
                                    .map(str::to_owned)
                            })
                    }
                };
                let public = public.ok_or_else(|| {
                    failure(
                        "M_INVALID_SIGNATURE",
                        format!("{sig_key_id} is not one of your signing keys"),
                    )
                })?;
                signatures::verify(&object, signer, sig_key_id, &public)
                    .map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
            }
            let mut extra = Map::new();
            extra.insert("signatures".into(), json!({ signer.as_str(): new_sigs }));
            merge_signatures(&mut stored, &extra);
            let bytes = serde_json::to_vec(&stored).map_err(|e| internal(e.into()))?;
            match row_kind {
                None => batch.put(USERIDDEVICEID_DEVICEKEYS, &device_row, &Raw(bytes)),
                Some(kind) => batch.put(
                    USERIDKIND_CROSSSIGNINGKEY,
                    &(target.to_owned(), kind.to_owned()),
                    &Raw(bytes),
                ),
            }
            return Ok(target.to_owned());
        }

        // Another user's master key, signed by the signer's user-signing key.
        let master = self
            .cross_signing_key(target, MASTER)
            .map_err(internal)?
            .filter(|m| cross_signing_public_key(m).is_some_and(|(_, p)| p == key_id))
            .ok_or_else(|| {
                failure(
                    "M_NOT_FOUND",
                    format!("{key_id} is not the master key of {target}"),
                )
            })?;
        same_key(&master, &object)?;
        let (usk_id, usk_public) = self
            .cross_signing_key(signer, USER_SIGNING)
            .map_err(internal)?
            .and_then(|k| cross_signing_public_key(&k))
            .ok_or_else(|| {
                failure(
                    "M_INVALID_SIGNATURE",
                    "You have no user-signing key to sign other users with",
                )
            })?;
        if !new_sigs.contains_key(&usk_id) {
            return Err(failure(
                "M_INVALID_SIGNATURE",
                "Other users' keys can only be signed with your user-signing key",
            ));
        }
        signatures::verify(&object, signer, &usk_id, &usk_public)
            .map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
        let row = (target.to_owned(), key_id.to_owned(), signer.to_owned());
        let sig = new_sigs.get(&usk_id).cloned().unwrap_or_default();
        let bytes = serde_json::to_vec(&json!({ usk_id: sig })).map_err(|e| internal(e.into()))?;
        batch.put(USERIDKEYIDSIGNER_SIGNATURES, &row, &Raw(bytes));
        // Only the signer sees the signature, so only their own list changed.
        Ok(signer.to_owned())
    }
}

fn failure(errcode: &str, message: impl Into<String>) -> Value {
    json!({ "errcode": errcode, "error": message.into() })
}

/// The signed object must be the stored key (signatures aside).
fn same_key(
    stored: &Map<String, Value>,
    signed: &Map<String, Value>,
) -> std::result::Result<(), Value> {
    let a = signed_content(stored).map_err(|e| failure("M_UNKNOWN", e))?;
    let b = signed_content(signed).map_err(|e| failure("M_INVALID_PARAM", e))?;
    if a == b {
        Ok(())
    } else {
        Err(failure(
            "M_INVALID_PARAM",
            "The signed key differs from the key the server has",
        ))
    }
}

fn check_one_time_key(user: &UserId, device: &DeviceId, id: &str, raw: &RawValue) -> Result<Value> {
    let Some((algorithm, key_name)) = id.split_once(':') else {
        return Err(Error::invalid_param(format!(
            "The key id {id} is not of the form algorithm:key_id"
        )));
    };
    if algorithm.is_empty() || key_name.is_empty() {
        return Err(Error::invalid_param(format!(
            "The key id {id} is incomplete"
        )));
    }
    serde_json::from_str::<OneTimeKey>(raw.get())
        .map_err(|e| Error::bad_json(format!("The key {id} has the wrong shape: {e}")))?;
    let value: Value = serde_json::from_str(raw.get())?;
    let Value::Object(object) = &value else {
        if algorithm.starts_with("signed_") {
            return Err(Error::bad_json(format!(
                "The signed key {id} must be an object with key and signatures"
            )));
        }
        // Unsigned keys (plain curve25519) are bare strings.
        return Ok(value);
    };
    if !object.get("key").is_some_and(Value::is_string) {
        return Err(Error::bad_json(format!(
            "The key {id} needs a string `key`"
        )));
    }
    check_signatures_shape(object, id)?;
    if signatures::signature(object, user, &format!("ed25519:{device}")).is_none() {
        return Err(Error::invalid_param(format!(
            "The key {id} must be signed by the device that uploads it"
        )));
    }
    Ok(value)
}

/// Checks a cross-signing key's shape and owner; returns it as an object.
fn check_cross_signing_key(
    user: &UserId,
    raw: &RawValue,
    usage: &str,
) -> Result<Map<String, Value>> {
    serde_json::from_str::<CrossSigningKey>(raw.get())
        .map_err(|e| Error::bad_json(format!("The {usage} key has the wrong shape: {e}")))?;
    let key = object_of(raw, usage)?;
    if key.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err(Error::invalid_param(format!(
            "The {usage} key must belong to you (user_id)"
        )));
    }
    let has_usage = key
        .get("usage")
        .and_then(Value::as_array)
        .is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage)));
    if !has_usage {
        return Err(Error::invalid_param(format!(
            "The {usage} key must list \"{usage}\" in its usage"
        )));
    }
    let keys = key.get("keys").and_then(Value::as_object);
    let valid_id = keys.filter(|k| k.len() == 1).is_some_and(|k| {
        k.iter().all(|(id, value)| {
            id.strip_prefix("ed25519:")
                .is_some_and(|public| Some(public) == value.as_str() && !public.is_empty())
        })
    });
    if !valid_id {
        return Err(Error::invalid_param(format!(
            "The {usage} key must hold exactly one key, as \"ed25519:<public key>\": \"<public key>\""
        )));
    }
    check_signatures_shape(&key, usage)?;
    Ok(key)
}

/// Stages the deletion of every key of a device.
pub fn stage_delete_device_keys(batch: &mut Batch, user: &UserId, device: &DeviceId) -> Result<()> {
    let row = (user.to_owned(), device.to_owned());
    batch.delete(USERIDDEVICEID_DEVICEKEYS, &row);
    let device_prefix = prefix(&row);
    batch.delete_prefix(USERIDDEVICEIDKEYID_ONETIMEKEY, &device_prefix)?;
    batch.delete_prefix(USERIDDEVICEIDALGORITHM_FALLBACKKEY, &device_prefix)?;
    Ok(())
}
