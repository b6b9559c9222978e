//! Profile fields: `displayname`, `avatar_url` and the custom fields of spec v1.16,
//! each stored as its own JSON value.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};

use super::Users;
use crate::{
    error::{Error, Result},
    storage::{Batch, Raw, USERIDFIELD_PROFILEVALUE, prefix},
};

/// The spec's limit on a whole profile, serialised as JSON.
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
/// The spec's limit on a profile key name.
pub const MAX_PROFILE_KEY_BYTES: usize = 255;
/// Display names longer than this are refused (Synapse uses the same bound).
const MAX_DISPLAYNAME_CHARS: usize = 256;

pub(super) fn put_field(batch: &mut Batch, user: &UserId, field: &str, value: &serde_json::Value) {
    let bytes = serde_json::to_vec(value).expect("JSON values serialise");
    batch.put(
        USERIDFIELD_PROFILEVALUE,
        &(user.to_owned(), field.to_owned()),
        &Raw(bytes),
    );
}

pub(super) fn clear(batch: &mut Batch, user: &UserId) -> Result<()> {
    batch.delete_prefix(USERIDFIELD_PROFILEVALUE, &prefix(&(user.to_owned(),)))
}

impl Users {
    pub fn profile(&self, user: &UserId) -> Result<BTreeMap<String, serde_json::Value>> {
        let rows = self
            .db
            .scan_prefix(USERIDFIELD_PROFILEVALUE, &prefix(&(user.to_owned(),)))?;
        rows.into_iter()
            .map(|((_, field), Raw(bytes))| Ok((field, serde_json::from_slice(&bytes)?)))
            .collect()
    }

    pub fn profile_field(&self, user: &UserId, field: &str) -> Result<Option<serde_json::Value>> {
        match self.db.get(
            USERIDFIELD_PROFILEVALUE,
            &(user.to_owned(), field.to_owned()),
        )? {
            Some(Raw(bytes)) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn displayname(&self, user: &UserId) -> Result<Option<String>> {
        Ok(self
            .profile_field(user, "displayname")?
            .and_then(|v| v.as_str().map(str::to_owned)))
    }

    /// Sets one field after checking the spec's rules for it and the size limits.
    pub fn set_profile_field(
        &self,
        user: &UserId,
        field: &str,
        value: serde_json::Value,
    ) -> Result<()> {
        validate_field(field, &value)?;
        let mut profile = self.profile(user)?;
        profile.insert(field.to_owned(), value.clone());
        let size = serde_json::to_vec(&profile)?.len();
        if size > MAX_PROFILE_BYTES {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ProfileTooLarge,
                format!("The profile would be {size} bytes; the limit is {MAX_PROFILE_BYTES}"),
            ));
        }
        let mut batch = self.db.batch();
        put_field(&mut batch, user, field, &value);
        batch.commit()
    }

    pub fn delete_profile_field(&self, user: &UserId, field: &str) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(
            USERIDFIELD_PROFILEVALUE,
            &(user.to_owned(), field.to_owned()),
        );
        batch.commit()
    }
}

fn validate_field(field: &str, value: &serde_json::Value) -> Result<()> {
    if field.len() > MAX_PROFILE_KEY_BYTES {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::KeyTooLarge,
            format!("Profile key names are limited to {MAX_PROFILE_KEY_BYTES} bytes"),
        ));
    }
    if field.is_empty() {
        return Err(Error::invalid_param("The profile key name is empty"));
    }
    match field {
        "displayname" => {
            let name = value
                .as_str()
                .ok_or_else(|| Error::bad_json("displayname must be a string"))?;
            if name.chars().count() > MAX_DISPLAYNAME_CHARS {
                return Err(Error::invalid_param(format!(
                    "displayname is limited to {MAX_DISPLAYNAME_CHARS} characters"
                )));
            }
        }
        "avatar_url" => {
            let url = value
                .as_str()
                .ok_or_else(|| Error::bad_json("avatar_url must be a string"))?;
            if !url.is_empty() && !<&ruma::MxcUri>::from(url).is_valid() {
                return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
            }
        }
        _ => {}
    }
    Ok(())
}
