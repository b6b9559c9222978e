//! The flows around phone numbers: sign-in by SMS code, verifying a number
//! (`msisdn/requestToken`), binding and unbinding it, and finding the account
//! of a phone identifier at login.

use http::StatusCode;
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::{client::uiaa::AuthData, client::uiaa::UserIdentifier, error::ErrorKind},
    thirdparty::Medium,
};

use super::{
    Auth, IssuedTokens,
    phone::{from_country, from_msisdn_address, normalize_e164},
    sms::{Purpose, SentCode},
};
use crate::error::{Error, Result};

fn in_use() -> Error {
    Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidInUse,
        "This phone number already belongs to an account",
    )
}

/// What `POST /login` with `ai.iambig.login.sms` asks for.
#[derive(Debug)]
pub struct SmsLogin {
    pub session: String,
    pub code: String,
    pub device_id: Option<OwnedDeviceId>,
    pub initial_device_display_name: Option<String>,
    pub refresh_token: bool,
    pub client_ip: String,
}

impl Auth {
    fn check_sms_rate_limits(&self, phone: &str, client_ip: &str) -> Result<()> {
        let sms = &self.config.sms;
        self.rate_limits
            .check("sms_ip", client_ip, sms.rate_limit_per_ip)?;
        self.rate_limits
            .check("sms_number", phone, sms.rate_limit_per_number)
    }

    /// Sends a sign-in code to `phone` (any international form).
    pub async fn request_sms_code(&self, phone: &str, client_ip: &str) -> Result<SentCode> {
        let phone = normalize_e164(phone)?;
        self.check_sms_rate_limits(&phone, client_ip)?;
        self.sms.request_login(&phone).await
    }

    /// Signs in with an SMS code; a number without an account gets a new one
    /// (with a generated localpart) when `sms.auto_register` is on.
    pub async fn login_sms(&self, req: SmsLogin) -> Result<IssuedTokens> {
        self.rate_limits.check(
            "login_ip",
            &req.client_ip,
            self.config.rate_limits.login_per_ip,
        )?;
        let phone = self.sms.consume_login(&req.session, &req.code)?;
        let _guard = self.registration_lock.lock().await;
        let mut batch = self.users.db().batch();
        let user = match self.users.user_by_phone(&phone)? {
            Some(user) => {
                if !self.users.is_active(&user)? {
                    return Err(Error::new(
                        StatusCode::FORBIDDEN,
                        ErrorKind::UserDeactivated,
                        "The account of this phone number has been deactivated",
                    ));
                }
                user
            }
            None => {
                if !self.config.sms.auto_register || !self.config.registration.enabled {
                    return Err(Error::forbidden(
                        "No account has this phone number, and this server does not create \
                         accounts by SMS",
                    ));
                }
                let user = self.generate_user_id()?;
                let localpart = user.localpart().to_owned();
                self.users
                    .create(&mut batch, &user, None, Some(&localpart))?;
                self.stage_bind_phone(&mut batch, &user, &phone, crate::util::now_ms())?;
                tracing::info!(%user, "registered by SMS");
                user
            }
        };
        let (tokens, staged, replaced) = self.sessions.stage_login(
            &mut batch,
            &user,
            req.device_id,
            req.initial_device_display_name,
            req.refresh_token,
        )?;
        self.sessions.commit_login(batch, staged, replaced)?;
        tracing::info!(%user, device = %tokens.device_id, "logged in by SMS");
        Ok(tokens)
    }

    /// `register/msisdn/requestToken` and `account/3pid/msisdn/requestToken`:
    /// sends a code to a number no account has yet; returns the session id.
    pub async fn request_msisdn_token(
        &self,
        purpose: Purpose,
        client_secret: &str,
        country: &str,
        phone_number: &str,
        send_attempt: u64,
        client_ip: &str,
    ) -> Result<String> {
        if purpose == Purpose::Register && !self.config.registration.enabled {
            return Err(Error::forbidden("Registration is disabled on this server"));
        }
        let phone = from_country(country, phone_number)?;
        // Limited before the in-use answer, which tells whether a number has an account.
        self.check_sms_rate_limits(&phone, client_ip)?;
        if self.users.user_by_phone(&phone)?.is_some() {
            return Err(in_use());
        }
        self.sms
            .request_threepid(purpose, client_secret, &phone, send_attempt)
            .await
    }

    /// Binds the number a 3PID session verified to `user` (after UIA).
    pub async fn add_threepid(
        &self,
        user: &UserId,
        sid: &str,
        client_secret: &str,
        auth: Option<AuthData>,
    ) -> Result<()> {
        // The session must be verified before UIA starts, so a client is not
        // asked for its password for nothing.
        self.sms
            .verified(sid, client_secret, Purpose::AddThreepid)?;
        self.confirm_identity(user, "add_threepid", auth).await?;
        let verified = self
            .sms
            .verified(sid, client_secret, Purpose::AddThreepid)?;
        let _guard = self.registration_lock.lock().await;
        match self.users.user_by_phone(&verified.phone)? {
            Some(owner) if owner != user => return Err(in_use()),
            Some(_) => {}
            None => {
                let mut batch = self.users.db().batch();
                self.stage_bind_phone(&mut batch, user, &verified.phone, verified.validated_at)?;
                batch.commit()?;
                tracing::info!(%user, "phone number added");
            }
        }
        self.sms.forget(sid);
        Ok(())
    }

    /// Unbinds a number (3PID address, with or without `+`) from `user`.
    pub fn delete_threepid(&self, user: &UserId, medium: &Medium, address: &str) -> Result<()> {
        let not_yours = || Error::not_found("That third-party identifier is not on your account");
        if *medium != Medium::Msisdn {
            return Err(not_yours());
        }
        let phone = from_msisdn_address(address).map_err(|_| not_yours())?;
        let mut batch = self.users.db().batch();
        if !self.stage_unbind_phone(&mut batch, user, &phone)? {
            return Err(not_yours());
        }
        batch.commit()?;
        tracing::info!(%user, "phone number removed");
        Ok(())
    }

    /// The `ai.iambig.login.sms` stage of user-interactive auth: a sign-in code
    /// (`sms_session`, `code`) sent to one of `user`'s numbers.
    pub(super) fn check_sms_stage(&self, user: &UserId, auth: &AuthData) -> Result<()> {
        let data = auth.data();
        let field = |name: &str| {
            data.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
                Error::missing_param(format!("The SMS stage needs \"{name}\" (a string)"))
            })
        };
        let phone = self
            .sms
            .consume_login(field("sms_session")?, field("code")?)?;
        if self.users.user_by_phone(&phone)?.as_deref() != Some(user) {
            return Err(Error::forbidden(
                "That code was sent to a number that is not on your account",
            ));
        }
        Ok(())
    }

    /// The account a login identifier names: `m.id.user`, or a phone number
    /// (`m.id.phone`, or `m.id.thirdparty` with medium `msisdn`). An unknown
    /// number gets the same answer as a wrong password.
    pub fn login_identifier_user(&self, identifier: &UserIdentifier) -> Result<OwnedUserId> {
        let phone = match identifier {
            UserIdentifier::PhoneNumber(p) => from_country(&p.country, &p.phone),
            UserIdentifier::Msisdn(m) => from_msisdn_address(&m.number),
            other => return super::identifier_user(other, self.users.server_name()),
        };
        self.users
            .user_by_phone(&phone?)?
            .ok_or_else(|| Error::forbidden("Invalid username or password"))
    }
}
