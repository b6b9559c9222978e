//! Sync tokens: `s<count>_<tag>`. The count is the position up to which
//! everything was delivered; the tag binds the token to its user, so a token of
//! another user is refused instead of silently giving wrong results.

use ruma::UserId;

use crate::{
    error::{Error, Result},
    util::hex,
};

/// The first 8 hex digits of SHA-256 over `<user>:<count>`.
fn tag(user: &UserId, count: u64) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{user}:{count}").as_bytes());
    hex(&digest.as_ref()[..4])
}

pub fn encode(user: &UserId, count: u64) -> String {
    format!("s{count}_{}", tag(user, count))
}

pub fn decode(user: &UserId, token: &str) -> Result<u64> {
    let invalid = || {
        Error::invalid_param(format!(
            "'{token}' is not a sync token of yours from this server"
        ))
    };
    let (count, token_tag) = token
        .strip_prefix('s')
        .and_then(|t| t.split_once('_'))
        .ok_or_else(invalid)?;
    let count: u64 = count.parse().map_err(|_| invalid())?;
    if token_tag != tag(user, count) {
        return Err(invalid());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_round_trip_and_bind_to_their_user() {
        let alice: &ruma::UserId = "@alice:x".try_into().unwrap();
        let bob: &ruma::UserId = "@bob:x".try_into().unwrap();
        let token = super::encode(alice, 42);
        assert_eq!(super::decode(alice, &token).unwrap(), 42);
        assert!(super::decode(bob, &token).is_err());
        for garbage in ["", "s", "s1", "sx_y", "t5", "s5_00000000"] {
            assert!(super::decode(alice, garbage).is_err(), "{garbage}");
        }
    }
}
