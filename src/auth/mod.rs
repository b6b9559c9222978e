//! Authentication: passwords, login sessions and tokens, user-interactive auth,
//! registration tokens, SMS codes and phone numbers, and the rate limits of
//! login and registration.

mod accounts;
pub mod password;
pub mod phone;
mod ratelimit;
mod registration_tokens;
mod sessions;
pub mod sms;
mod threepids;
mod uia;

use std::{sync::Arc, time::Duration};

pub use self::{
    accounts::{Registered, Registration, check_new_localpart},
    ratelimit::RateLimiter,
    registration_tokens::{RegistrationToken, RegistrationTokens, is_valid_token_string},
    sessions::{
        Identity, IssuedTokens, RefreshRecord, SessionRecord, Sessions, load_or_create_key,
    },
    threepids::SmsLogin,
    uia::{UiaOutcome, UiaPurpose, UiaSessions, identifier_user, parse_user_input},
};
use crate::{config::Config, error::Result, users::Users};

#[derive(Debug)]
pub struct Auth {
    config: Arc<Config>,
    users: Users,
    pub sessions: Sessions,
    pub registration_tokens: RegistrationTokens,
    pub rate_limits: RateLimiter,
    uia: UiaSessions,
    pub sms: sms::Sms,
    /// Told when a phone number joins or leaves an account (contact discovery).
    contacts: crate::contacts::Contacts,
    /// Serialises account creation between the existence check and the commit.
    registration_lock: tokio::sync::Mutex<()>,
}

impl Auth {
    /// Binds a verified number to `user` in `batch`, and tells contact
    /// discovery (whose uploaders learn of the arrival once it commits).
    pub(crate) fn stage_bind_phone(
        &self,
        batch: &mut crate::storage::Batch,
        user: &ruma::UserId,
        phone: &str,
        validated_at: u64,
    ) -> Result<()> {
        self.users
            .stage_bind_phone(batch, user, phone, validated_at);
        self.contacts.on_phone_added(batch, phone, user)
    }

    /// Unbinds a number from `user` in `batch`; false if it is not theirs.
    pub(crate) fn stage_unbind_phone(
        &self,
        batch: &mut crate::storage::Batch,
        user: &ruma::UserId,
        phone: &str,
    ) -> Result<bool> {
        if !self.users.stage_unbind_phone(batch, user, phone)? {
            return Ok(false);
        }
        self.contacts.on_phone_removed(batch, phone)?;
        Ok(true)
    }

    pub fn new(
        config: Arc<Config>,
        users: Users,
        contacts: crate::contacts::Contacts,
    ) -> Result<Self> {
        let key = load_or_create_key(&config.data_dir.join("keys").join("access_token.key"))?;
        let access_lifetime =
            Duration::from_millis(config.auth.refreshable_access_token_lifetime_ms);
        Ok(Self {
            sessions: Sessions::load(users.clone(), &key, access_lifetime)?,
            registration_tokens: RegistrationTokens::new(users.db().clone()),
            rate_limits: RateLimiter::new(config.rate_limits.enabled),
            uia: UiaSessions::new(Duration::from_millis(config.auth.uia_session_lifetime_ms)),
            sms: sms::Sms::new(config.sms.clone())?,
            registration_lock: tokio::sync::Mutex::new(()),
            contacts,
            users,
            config,
        })
    }
}
