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
    /// Serialises account creation between the existence check and the commit.
    registration_lock: tokio::sync::Mutex<()>,
}

impl Auth {
    pub fn new(config: Arc<Config>, users: Users) -> Result<Self> {
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
            users,
            config,
        })
    }
}
