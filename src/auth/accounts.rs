//! The account flows: registration, password login, password change and
//! deactivation. Each writes everything it changes in one batch.

use http::StatusCode;
use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType},
        error::ErrorKind,
    },
};

use super::{
    Auth, IssuedTokens, UiaPurpose,
    sms::{SMS_LOGIN_TYPE, VerifiedPhone},
};
use crate::{
    error::{Error, Result},
    util::random_string_from,
};

/// What a registration asks for, already parsed.
#[derive(Debug)]
pub struct Registration {
    pub username: Option<String>,
    pub password: Option<String>,
    pub device_id: Option<OwnedDeviceId>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: bool,
    pub refresh_token: bool,
    pub auth: Option<AuthData>,
    pub client_ip: String,
}

#[derive(Debug)]
pub enum Registered {
    LoggedIn(IssuedTokens),
    AccountOnly(OwnedUserId),
}

/// The localpart grammar for new accounts (spec: user identifiers, historical
/// characters excluded). A leading underscore is kept for application services.
pub fn check_new_localpart(localpart: &str, server_name: &ruma::ServerName) -> Result<OwnedUserId> {
    let invalid = |why: &str| Error::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, why);
    if localpart.is_empty() {
        return Err(invalid("The username is empty"));
    }
    if !localpart
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
    {
        return Err(invalid(
            "A username may only contain a-z, 0-9 and the characters . _ = - / +",
        ));
    }
    if localpart.starts_with('_') {
        return Err(invalid(
            "Usernames starting with '_' are reserved for application services",
        ));
    }
    let user = UserId::parse_with_server_name(localpart, server_name)
        .map_err(|e| invalid(&format!("Invalid username: {e}")))?;
    if user.as_str().len() > 255 {
        return Err(invalid("The full user id may be at most 255 bytes long"));
    }
    Ok(user)
}

impl Auth {
    /// Registration flows; each may also verify a phone number (`m.login.msisdn`),
    /// which is then bound to the new account.
    fn registration_flows(&self) -> Vec<AuthFlow> {
        if self.config.registration.tokens_required {
            vec![
                AuthFlow::new(vec![AuthType::RegistrationToken]),
                AuthFlow::new(vec![AuthType::RegistrationToken, AuthType::Msisdn]),
            ]
        } else {
            vec![
                AuthFlow::new(vec![AuthType::Dummy]),
                AuthFlow::new(vec![AuthType::Msisdn]),
            ]
        }
    }

    fn check_password_strength(&self, password: &str) -> Result<()> {
        let min = self.config.auth.min_password_length;
        if password.chars().count() < min {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::WeakPassword,
                format!("The password must be at least {min} characters long"),
            ));
        }
        Ok(())
    }

    /// Whether a username could be registered now (spec: `register/available`).
    pub fn check_username_available(&self, localpart: &str) -> Result<OwnedUserId> {
        let user = check_new_localpart(localpart, self.users.server_name())?;
        if self.users.account(&user)?.is_some() {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UserInUse,
                "That user id is taken",
            ));
        }
        Ok(user)
    }

    pub async fn register(&self, req: Registration) -> Result<Registered> {
        if !self.config.registration.enabled {
            return Err(Error::forbidden("Registration is disabled on this server"));
        }
        if req.auth.is_some() {
            self.rate_limits.check(
                "register_ip",
                &req.client_ip,
                self.config.rate_limits.register_per_ip,
            )?;
        }
        let requested = match &req.username {
            Some(name) => Some(self.check_username_available(&name.to_lowercase())?),
            None => None,
        };
        if let Some(pw) = &req.password {
            self.check_password_strength(pw)?;
        }
        let outcome = self
            .uia(UiaPurpose::Register, self.registration_flows(), req.auth)
            .await?;
        let result = self
            .create_account(
                requested,
                req.password,
                req.device_id,
                req.initial_device_display_name,
                req.inhibit_login,
                req.refresh_token,
                outcome.registration_token.as_deref(),
                outcome.msisdn.as_ref(),
            )
            .await;
        if result.is_ok()
            && let Some(verified) = &outcome.msisdn
        {
            self.sms.forget(&verified.sid);
        }
        if let Some(token) = &outcome.registration_token {
            self.registration_tokens.release(token);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_account(
        &self,
        user: Option<OwnedUserId>,
        password: Option<String>,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        inhibit_login: bool,
        refresh_token: bool,
        registration_token: Option<&str>,
        msisdn: Option<&VerifiedPhone>,
    ) -> Result<Registered> {
        let hash = match password {
            Some(pw) => Some(self.users.passwords().hash(pw).await?),
            None => None,
        };
        // One registration at a time between the existence check and the commit.
        let _guard = self.registration_lock.lock().await;
        let user = match user {
            Some(user) => user,
            None => self.generate_user_id()?,
        };
        let mut batch = self.users.db().batch();
        let default_name = user.localpart().to_owned();
        self.users
            .create(&mut batch, &user, hash, Some(&default_name))?;
        if let Some(verified) = msisdn {
            if self.users.user_by_phone(&verified.phone)?.is_some() {
                return Err(Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::ThreepidInUse,
                    "This phone number already belongs to an account",
                ));
            }
            self.stage_bind_phone(&mut batch, &user, &verified.phone, verified.validated_at)?;
        }
        if let Some(token) = registration_token {
            self.registration_tokens.complete(&mut batch, token)?;
        }
        if inhibit_login {
            batch.commit()?;
            tracing::info!(%user, "registered");
            return Ok(Registered::AccountOnly(user));
        }
        let (tokens, staged, replaced) =
            self.sessions
                .stage_login(&mut batch, &user, device_id, display_name, refresh_token)?;
        self.sessions.commit_login(batch, staged, replaced)?;
        tracing::info!(%user, device = %tokens.device_id, "registered");
        Ok(Registered::LoggedIn(tokens))
    }

    pub(super) fn generate_user_id(&self) -> Result<OwnedUserId> {
        loop {
            let localpart = format!(
                "u{}",
                random_string_from(b"abcdefghijklmnopqrstuvwxyz0123456789", 10)
            );
            let user = check_new_localpart(&localpart, self.users.server_name())?;
            if self.users.account(&user)?.is_none() {
                return Ok(user);
            }
        }
    }

    /// Creates an account outside the HTTP flow (admin CLI).
    pub async fn create_user_admin(
        &self,
        localpart: &str,
        password: Option<String>,
    ) -> Result<OwnedUserId> {
        let user = self.check_username_available(&localpart.to_lowercase())?;
        if let Some(pw) = &password {
            self.check_password_strength(pw)?;
        }
        match self
            .create_account(Some(user), password, None, None, true, false, None, None)
            .await?
        {
            Registered::AccountOnly(user)
            | Registered::LoggedIn(IssuedTokens { user_id: user, .. }) => Ok(user),
        }
    }

    /// `m.login.password` login.
    pub async fn login_password(
        &self,
        user: OwnedUserId,
        password: &str,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        refresh_token: bool,
        client_ip: &str,
    ) -> Result<IssuedTokens> {
        self.rate_limits
            .check("login_ip", client_ip, self.config.rate_limits.login_per_ip)?;
        self.rate_limits.check(
            "login_account",
            user.as_str(),
            self.config.rate_limits.login_per_account,
        )?;
        let denied = || Error::forbidden("Invalid username or password");
        if !self.users.is_local(&user) {
            return Err(denied());
        }
        match self.users.account(&user)? {
            None => return Err(denied()),
            Some(a) if a.deactivated => {
                return Err(Error::new(
                    StatusCode::FORBIDDEN,
                    ErrorKind::UserDeactivated,
                    "This account has been deactivated",
                ));
            }
            Some(_) => {}
        }
        if !self.users.check_password(&user, password).await? {
            return Err(denied());
        }
        let mut batch = self.users.db().batch();
        let (tokens, staged, replaced) =
            self.sessions
                .stage_login(&mut batch, &user, device_id, display_name, refresh_token)?;
        self.sessions.commit_login(batch, staged, replaced)?;
        tracing::info!(%user, device = %tokens.device_id, "logged in");
        Ok(tokens)
    }

    /// How an account owner confirms who they are: their password, or a code
    /// sent to one of their phone numbers (an account made by SMS has no password).
    fn account_flows(&self, user: &UserId) -> Result<Vec<AuthFlow>> {
        let has_password = self
            .users
            .account(user)?
            .is_some_and(|a| a.password_hash.is_some());
        let has_phone = !self.users.phone_numbers(user)?.is_empty();
        let mut flows = Vec::new();
        if has_password || !has_phone {
            flows.push(AuthFlow::new(vec![AuthType::Password]));
        }
        if has_phone {
            flows.push(AuthFlow::new(vec![AuthType::from(SMS_LOGIN_TYPE)]));
        }
        Ok(flows)
    }

    /// UIA with the account's password, for an operation on the caller's own account.
    pub async fn confirm_identity(
        &self,
        user: &UserId,
        operation: &'static str,
        auth: Option<AuthData>,
    ) -> Result<()> {
        let purpose = UiaPurpose::Account {
            user: user.to_owned(),
            operation,
        };
        self.uia(purpose, self.account_flows(user)?, auth)
            .await
            .map(|_| ())
    }

    /// Changes the password; unless `keep_other_devices`, logs out every other device.
    pub async fn change_password(
        &self,
        user: &UserId,
        current_device: &DeviceId,
        new_password: String,
        keep_other_devices: bool,
        auth: Option<AuthData>,
    ) -> Result<()> {
        self.confirm_identity(user, "password", auth).await?;
        self.check_password_strength(&new_password)?;
        let hash = self.users.passwords().hash(new_password).await?;
        let mut batch = self.users.db().batch();
        self.users.set_password_hash(&mut batch, user, hash)?;
        let forgotten = if keep_other_devices {
            Vec::new()
        } else {
            self.sessions
                .stage_logout_all(&mut batch, user, Some(current_device))?
        };
        self.sessions.commit_logout(batch, forgotten)?;
        tracing::info!(%user, "password changed");
        Ok(())
    }

    /// Sets a password without the old one (admin CLI); logs out every device.
    pub async fn reset_password_admin(&self, user: &UserId, new_password: String) -> Result<()> {
        if !self.users.is_active(user)? {
            return Err(Error::not_found(format!(
                "{user} is not an active local account"
            )));
        }
        self.check_password_strength(&new_password)?;
        let hash = self.users.passwords().hash(new_password).await?;
        let mut batch = self.users.db().batch();
        self.users.set_password_hash(&mut batch, user, hash)?;
        let forgotten = self.sessions.stage_logout_all(&mut batch, user, None)?;
        self.sessions.commit_logout(batch, forgotten)?;
        Ok(())
    }

    /// Deactivates the account for good: it can never log in again and its
    /// localpart is never reused. Devices, tokens, profile and private data go.
    pub async fn deactivate(&self, user: &UserId, auth: Option<AuthData>) -> Result<()> {
        self.confirm_identity(user, "deactivate", auth).await?;
        let mut batch = self.users.db().batch();
        self.users.deactivate(&mut batch, user)?;
        let forgotten = self.sessions.stage_logout_all(&mut batch, user, None)?;
        self.users.delete_all_account_data(&mut batch, user)?;
        crate::push::Notifications::stage_delete_user(&mut batch, user)?;
        crate::push::pushers::Pushers::stage_delete_user(self.users.db(), &mut batch, user)?;
        self.users.delete_private_data(&mut batch, user)?;
        for number in self.users.phone_numbers(user)? {
            self.stage_unbind_phone(&mut batch, user, &number.address)?;
        }
        self.sessions.commit_logout(batch, forgotten)?;
        tracing::info!(%user, "account deactivated");
        Ok(())
    }

    /// Deletes devices after UIA (spec: `DELETE /devices/{id}`, `/delete_devices`).
    pub async fn delete_devices(
        &self,
        user: &UserId,
        devices: &[OwnedDeviceId],
        auth: Option<AuthData>,
    ) -> Result<()> {
        self.confirm_identity(user, "delete_devices", auth).await?;
        let mut batch = self.users.db().batch();
        let mut forgotten = Vec::new();
        for device in devices {
            forgotten.extend(
                self.sessions
                    .stage_logout_device(&mut batch, user, device)?,
            );
        }
        self.sessions.commit_logout(batch, forgotten)?;
        Ok(())
    }
}
