//! User-interactive authentication: sessions of completed stages, kept in memory
//! for a bounded time (an abandoned registration frees its token reservation).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use http::StatusCode;
use parking_lot::Mutex;
use ruma::{
    OwnedUserId, UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::{
    Auth,
    sms::{Purpose, SMS_LOGIN_TYPE, VerifiedPhone},
};
use crate::{
    error::{Error, Result},
    util::{ALPHANUMERIC, random_string_from},
};

/// What a UIA session protects. A session can only complete the operation it was
/// started for, by the user it was started by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiaPurpose {
    Register,
    /// An operation on an account by its owner (`"password"`, `"deactivate"`, ...).
    Account {
        user: OwnedUserId,
        operation: &'static str,
    },
}

#[derive(Debug)]
struct UiaSession {
    purpose: UiaPurpose,
    flows: Vec<AuthFlow>,
    completed: Vec<AuthType>,
    registration_token: Option<String>,
    /// The number an `m.login.msisdn` stage verified.
    msisdn: Option<VerifiedPhone>,
    started: Instant,
}

/// What a finished UIA handed over (for registration: the token it reserved).
#[derive(Debug, Default)]
pub struct UiaOutcome {
    pub registration_token: Option<String>,
    pub msisdn: Option<VerifiedPhone>,
}

#[derive(Debug)]
pub struct UiaSessions {
    lifetime: Duration,
    sessions: Mutex<HashMap<String, UiaSession>>,
}

impl UiaSessions {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

impl Auth {
    /// Runs one step of user-interactive auth. Returns the outcome once a flow is
    /// complete; otherwise an `Error::Uiaa` (401 with flows, completed stages and,
    /// after a failed stage, its error).
    pub async fn uia(
        &self,
        purpose: UiaPurpose,
        flows: Vec<AuthFlow>,
        auth: Option<AuthData>,
    ) -> Result<UiaOutcome> {
        self.expire_uia_sessions();
        let Some(auth) = auth else {
            let id = self.start_uia_session(purpose, flows);
            return Err(Error::Uiaa(Box::new(self.uia_info(&id))));
        };
        // A client may skip the empty first request and send a stage directly.
        let session_id = match auth.session() {
            Some(id) => id.to_owned(),
            None => self.start_uia_session(purpose.clone(), flows),
        };
        {
            let sessions = self.uia.sessions.lock();
            let session = sessions.get(&session_id).ok_or_else(|| {
                Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Unknown,
                    "Unknown or expired user-interactive auth session; start again without a session",
                )
            })?;
            if session.purpose != purpose {
                return Err(Error::forbidden(
                    "This auth session was started for a different request",
                ));
            }
        }

        if let Err(stage_error) = self.attempt_stage(&session_id, &purpose, &auth).await {
            let Error::Matrix {
                kind,
                message,
                status,
            } = stage_error
            else {
                return Err(stage_error);
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Error::Matrix {
                    kind,
                    message,
                    status,
                });
            }
            let mut info = self.uia_info(&session_id);
            info.auth_error = Some(Box::new(StandardErrorBody::new(kind, message)));
            return Err(Error::Uiaa(Box::new(info)));
        }

        let mut sessions = self.uia.sessions.lock();
        let session = sessions.get(&session_id).expect("session checked above");
        let done = session.flows.iter().any(|flow| {
            flow.stages
                .iter()
                .all(|stage| session.completed.contains(stage))
        });
        if !done {
            drop(sessions);
            return Err(Error::Uiaa(Box::new(self.uia_info(&session_id))));
        }
        let session = sessions.remove(&session_id).expect("session checked above");
        Ok(UiaOutcome {
            registration_token: session.registration_token,
            msisdn: session.msisdn,
        })
    }

    async fn attempt_stage(
        &self,
        session_id: &str,
        purpose: &UiaPurpose,
        auth: &AuthData,
    ) -> Result<()> {
        let stage = auth
            .auth_type()
            .ok_or_else(|| Error::invalid_param("Fallback acknowledgements are not supported"))?;
        let offered = {
            let sessions = self.uia.sessions.lock();
            let session = sessions
                .get(session_id)
                .expect("caller checked the session");
            session.flows.iter().any(|f| f.stages.contains(&stage))
        };
        if !offered {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unrecognized,
                format!("The auth stage {stage} is not offered for this request"),
            ));
        }
        let mut reserved_token = None;
        let mut verified_phone = None;
        match auth {
            AuthData::Dummy(_) => {}
            AuthData::RegistrationToken(t) => {
                if !self.registration_tokens.reserve(&t.token)? {
                    return Err(Error::new(
                        StatusCode::UNAUTHORIZED,
                        ErrorKind::Forbidden,
                        "That registration token is not valid (unknown, used up or expired)",
                    ));
                }
                reserved_token = Some(t.token.clone());
            }
            AuthData::Password(p) => {
                let UiaPurpose::Account { user, .. } = purpose else {
                    return Err(Error::invalid_param(
                        "m.login.password is not a registration stage",
                    ));
                };
                let named = identifier_user(&p.identifier, self.users.server_name())?;
                if named != *user {
                    return Err(Error::forbidden(
                        "The identifier does not name the logged-in user",
                    ));
                }
                self.rate_limits.check(
                    "login_account",
                    user.as_str(),
                    self.config.rate_limits.login_per_account,
                )?;
                if !self.users.check_password(user, &p.password).await? {
                    return Err(Error::forbidden("Invalid password"));
                }
            }
            AuthData::Msisdn(m) => {
                if *purpose != UiaPurpose::Register {
                    return Err(Error::invalid_param(
                        "m.login.msisdn is only a registration stage here",
                    ));
                }
                let creds = &m.thirdparty_id_creds;
                let verified = self.sms.verified(
                    creds.sid.as_str(),
                    creds.client_secret.as_str(),
                    Purpose::Register,
                )?;
                if self.users.user_by_phone(&verified.phone)?.is_some() {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::ThreepidInUse,
                        "This phone number already belongs to an account",
                    ));
                }
                verified_phone = Some(verified);
            }
            _ if stage.as_str() == SMS_LOGIN_TYPE => {
                let UiaPurpose::Account { user, .. } = purpose else {
                    return Err(Error::invalid_param(format!(
                        "{SMS_LOGIN_TYPE} is not a registration stage"
                    )));
                };
                self.check_sms_stage(user, auth)?;
            }
            _ => {
                return Err(Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Unrecognized,
                    format!("The auth stage {stage} is not supported by this server"),
                ));
            }
        }
        let mut sessions = self.uia.sessions.lock();
        match sessions.get_mut(session_id) {
            Some(session) => {
                if !session.completed.contains(&stage) {
                    session.completed.push(stage);
                }
                if verified_phone.is_some() {
                    session.msisdn = verified_phone;
                }
                if let Some(token) = reserved_token
                    && let Some(old) = session.registration_token.replace(token)
                {
                    self.registration_tokens.release(&old);
                }
                Ok(())
            }
            None => {
                if let Some(token) = reserved_token {
                    self.registration_tokens.release(&token);
                }
                Err(Error::invalid_param(
                    "The auth session expired while this stage ran",
                ))
            }
        }
    }

    fn start_uia_session(&self, purpose: UiaPurpose, flows: Vec<AuthFlow>) -> String {
        let id = random_string_from(ALPHANUMERIC, 24);
        let session = UiaSession {
            purpose,
            flows,
            completed: Vec::new(),
            registration_token: None,
            msisdn: None,
            started: Instant::now(),
        };
        self.uia.sessions.lock().insert(id.clone(), session);
        id
    }

    fn uia_info(&self, session_id: &str) -> UiaaInfo {
        let sessions = self.uia.sessions.lock();
        let session = sessions.get(session_id).expect("session exists");
        let mut info = UiaaInfo::new(session.flows.clone());
        info.completed = session.completed.clone();
        info.session = Some(session_id.to_owned());
        info.params =
            Some(serde_json::value::to_raw_value(&serde_json::json!({})).expect("{} serialises"));
        info
    }

    fn expire_uia_sessions(&self) {
        let lifetime = self.uia.lifetime;
        let mut sessions = self.uia.sessions.lock();
        sessions.retain(|_, s| {
            let alive = s.started.elapsed() < lifetime;
            if !alive && let Some(token) = &s.registration_token {
                self.registration_tokens.release(token);
            }
            alive
        });
    }
}

/// The user an `m.id.user` identifier names: a localpart or a full user id.
pub fn identifier_user(
    identifier: &UserIdentifier,
    server_name: &ruma::ServerName,
) -> Result<OwnedUserId> {
    match identifier {
        UserIdentifier::Matrix(id) => parse_user_input(&id.user, server_name),
        _ => Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unrecognized,
            "Only the m.id.user identifier is supported here",
        )),
    }
}

/// Accepts `alice` or `@alice:server`, case-insensitively for the localpart.
pub fn parse_user_input(input: &str, server_name: &ruma::ServerName) -> Result<OwnedUserId> {
    let forbidden = || Error::forbidden("Invalid username or password");
    let user = if input.starts_with('@') {
        UserId::parse(input.to_lowercase()).map_err(|_| forbidden())?
    } else {
        UserId::parse_with_server_name(input.to_lowercase(), server_name)
            .map_err(|_| forbidden())?
    };
    Ok(user)
}
