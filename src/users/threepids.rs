//! Phone numbers bound to accounts (Matrix 3PIDs of medium `msisdn`). One number
//! belongs to at most one account. Keys are the number's digits without `+`
//! (the Matrix msisdn address form), so contact discovery can look numbers up.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::Users;
use crate::{
    error::Result,
    storage::{Batch, JsonValue, MSISDN_THREEPID, USERIDMSISDN_, prefix},
};

/// Who a number belongs to, and since when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreepidRecord {
    pub user_id: OwnedUserId,
    pub added_at: u64,
    pub validated_at: u64,
}

impl JsonValue for ThreepidRecord {}

/// A number as listed for its owner.
#[derive(Debug, Clone)]
pub struct BoundNumber {
    /// Digits without `+`, e.g. `447700900123`.
    pub address: String,
    pub added_at: u64,
    pub validated_at: u64,
}

fn key(number: &str) -> String {
    number.trim_start_matches('+').to_owned()
}

impl Users {
    /// The local account a phone number belongs to. `number` is a normalised
    /// E.164 number, with or without the `+` (`+447700900123` or `447700900123`);
    /// see `crate::auth::phone::normalize_e164` for other input.
    pub fn user_by_phone(&self, number: &str) -> Result<Option<OwnedUserId>> {
        Ok(self
            .db()
            .get(MSISDN_THREEPID, &key(number))?
            .map(|r| r.user_id))
    }

    /// The numbers bound to `user`, in key order.
    pub fn phone_numbers(&self, user: &UserId) -> Result<Vec<BoundNumber>> {
        let mut out = Vec::new();
        for ((_, address), ()) in self
            .db()
            .scan_prefix(USERIDMSISDN_, &prefix(&(user.to_owned(),)))?
        {
            if let Some(record) = self.db().get(MSISDN_THREEPID, &address)? {
                out.push(BoundNumber {
                    address,
                    added_at: record.added_at,
                    validated_at: record.validated_at,
                });
            }
        }
        Ok(out)
    }

    /// Binds `number` to `user` in `batch`. The caller holds the registration
    /// lock and has checked that no other account has the number.
    pub fn stage_bind_phone(
        &self,
        batch: &mut Batch,
        user: &UserId,
        number: &str,
        validated_at: u64,
    ) {
        let record = ThreepidRecord {
            user_id: user.to_owned(),
            added_at: crate::util::now_ms(),
            validated_at,
        };
        batch.put(MSISDN_THREEPID, &key(number), &record);
        batch.put(USERIDMSISDN_, &(user.to_owned(), key(number)), &());
    }

    /// Unbinds `number` from `user` in `batch`; false if `user` does not have it.
    pub fn stage_unbind_phone(
        &self,
        batch: &mut Batch,
        user: &UserId,
        number: &str,
    ) -> Result<bool> {
        let owned = self
            .db()
            .get(MSISDN_THREEPID, &key(number))?
            .is_some_and(|r| r.user_id == user);
        if owned {
            batch.delete(MSISDN_THREEPID, &key(number));
            batch.delete(USERIDMSISDN_, &(user.to_owned(), key(number)));
        }
        Ok(owned)
    }
}
