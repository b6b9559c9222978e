//! SMS codes: sign-in by SMS (`ai.iambig.login.sms`) and the verification of
//! phone numbers as Matrix 3PIDs (`msisdn/requestToken`, `submit_token`).
//!
//! A code is 6 digits from the OS CSPRNG. Only its HMAC (keyed with a random
//! per-process key and the session id) is kept, in memory: a restart voids
//! pending codes, which at worst costs a user one more request. A code expires
//! after `sms.code_lifetime_ms` and allows `sms.max_attempts` wrong tries, after
//! which its session is dead. Another code is sent to a number no sooner than
//! `sms.resend_interval_ms` after the last one; a send the provider failed does
//! not count and leaves the previous code of the number usable.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use http::StatusCode;
use parking_lot::Mutex;
use ring::hmac;
use ruma::api::error::ErrorKind;

use crate::{
    config::{SmsConfig, SmsProvider},
    error::{Error, Result},
    util::{ALPHANUMERIC, constant_time_eq, now_ms, random_bytes, random_string_from},
};

/// The login type of sign-in by SMS code, also a user-interactive auth stage
/// for accounts with a phone number (docs/extensions.md).
pub const SMS_LOGIN_TYPE: &str = "ai.iambig.login.sms";

/// What a code proves once entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Sign-in (`POST /login` with `ai.iambig.login.sms`).
    Login,
    /// The `m.login.msisdn` registration stage.
    Register,
    /// `POST /account/3pid/add`.
    AddThreepid,
}

#[derive(Debug)]
struct Challenge {
    purpose: Purpose,
    phone: String,
    code_mac: Vec<u8>,
    expires: Instant,
    attempts: u32,
    /// 3PID sessions: the client's secret, the last `send_attempt`, and when the
    /// code was entered.
    client_secret: Option<String>,
    send_attempt: u64,
    validated_at: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    challenges: HashMap<String, Challenge>,
    /// The live sign-in session of each number (a new code replaces it).
    login_by_phone: HashMap<String, String>,
    /// When the last code went to each number.
    last_sent: HashMap<String, Instant>,
}

/// A code sent for sign-in.
#[derive(Debug, Clone)]
pub struct SentCode {
    pub session: String,
    pub expires_in: Duration,
    pub resend_after: Duration,
}

/// A phone number proven by a 3PID session.
#[derive(Debug, Clone)]
pub struct VerifiedPhone {
    pub sid: String,
    pub phone: String,
    pub validated_at: u64,
}

pub struct Sms {
    config: SmsConfig,
    http: reqwest::Client,
    mac_key: hmac::Key,
    state: Mutex<State>,
}

impl std::fmt::Debug for Sms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sms")
            .field("provider", &self.config.provider)
            .finish_non_exhaustive()
    }
}

/// The details (URLs, provider answers) go to the log, not to the client.
fn provider_failed(why: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %why, "SMS provider failed");
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        "The SMS could not be sent: the SMS provider failed (the server log has the details). \
         Try again later.",
    )
}

fn session_gone() -> Error {
    Error::new(
        StatusCode::FORBIDDEN,
        ErrorKind::Forbidden,
        "This SMS session is unknown, expired or used up (too many wrong codes); request a new code",
    )
}

fn threepid_session_gone() -> Error {
    Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidAuthFailed,
        "This verification session is unknown or expired, its client_secret does not match, \
         or it had too many wrong codes; request a new token",
    )
}

/// The SMS text: the code is its only run of 6 digits.
pub fn message_text(code: &str, lifetime: Duration) -> String {
    let minutes = lifetime.as_secs().div_ceil(60).max(1);
    format!("Your BIG Messenger code is {code}. It expires in {minutes} min. Do not share it.")
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Hex HMAC-SHA256 of `body` with `secret`: the `X-Bigd-Signature` header.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sms {
    pub fn new(config: SmsConfig) -> Result<Self> {
        crate::util::install_tls_provider();
        let timeout = Duration::from_millis(config.send_timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("bigd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            mac_key: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()),
            config,
            http,
            state: Mutex::new(State::default()),
        })
    }

    fn mac(&self, session: &str, code: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.mac_key);
        ctx.update(session.as_bytes());
        ctx.update(b":");
        ctx.update(code.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    fn lifetime(&self) -> Duration {
        Duration::from_millis(self.config.code_lifetime_ms)
    }

    fn new_code() -> String {
        random_string_from(b"0123456789", 6)
    }

    fn prune(state: &mut State, now: Instant) {
        state.challenges.retain(|_, c| c.expires > now);
        let challenges = &state.challenges;
        state
            .login_by_phone
            .retain(|_, session| challenges.contains_key(session));
    }

    /// Claims the resend slot of `phone`, or says how long to wait. Returns
    /// the previous send time, to restore when the send fails.
    fn claim_send_slot(&self, phone: &str) -> Result<Option<Instant>> {
        let now = Instant::now();
        let interval = Duration::from_millis(self.config.resend_interval_ms);
        let mut state = self.state.lock();
        Self::prune(&mut state, now);
        state
            .last_sent
            .retain(|_, at| now.duration_since(*at) < interval);
        let previous = state.last_sent.get(phone).copied();
        if let Some(at) = previous {
            let wait = interval.saturating_sub(now.duration_since(at));
            if !wait.is_zero() {
                return Err(Error::limit_exceeded(wait));
            }
        }
        state.last_sent.insert(phone.to_owned(), now);
        Ok(previous)
    }

    fn release_send_slot(&self, phone: &str, previous: Option<Instant>) {
        let mut state = self.state.lock();
        match previous {
            Some(at) => state.last_sent.insert(phone.to_owned(), at),
            None => state.last_sent.remove(phone),
        };
    }

    /// Sends `code` to `phone`, holding the number's resend slot.
    async fn send_code(&self, phone: &str, code: &str) -> Result<()> {
        let previous = self.claim_send_slot(phone)?;
        let result = self
            .deliver(phone, &message_text(code, self.lifetime()))
            .await;
        if result.is_err() {
            self.release_send_slot(phone, previous);
        }
        result
    }

    /// Sends a new sign-in code to `phone` (normalised). The number's previous
    /// sign-in session ends once this one is sent.
    pub async fn request_login(&self, phone: &str) -> Result<SentCode> {
        let session = random_string_from(ALPHANUMERIC, 32);
        let code = Self::new_code();
        self.send_code(phone, &code).await?;
        let challenge = Challenge {
            purpose: Purpose::Login,
            phone: phone.to_owned(),
            code_mac: self.mac(&session, &code),
            expires: Instant::now() + self.lifetime(),
            attempts: 0,
            client_secret: None,
            send_attempt: 0,
            validated_at: None,
        };
        let mut state = self.state.lock();
        if let Some(old) = state
            .login_by_phone
            .insert(phone.to_owned(), session.clone())
        {
            state.challenges.remove(&old);
        }
        state.challenges.insert(session.clone(), challenge);
        Ok(SentCode {
            session,
            expires_in: self.lifetime(),
            resend_after: Duration::from_millis(self.config.resend_interval_ms),
        })
    }

    /// Checks `code` against a session of `purpose`: counts a wrong try (the
    /// last allowed one kills the session); returns the phone number on a match.
    fn check_code(
        &self,
        state: &mut State,
        session: &str,
        code: &str,
        purpose: Purpose,
        gone: fn() -> Error,
    ) -> Result<std::result::Result<String, u32>> {
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid_param("The code is the 6 digits of the SMS"));
        }
        let now = Instant::now();
        let Some(challenge) = state
            .challenges
            .get_mut(session)
            .filter(|c| c.purpose == purpose && c.expires > now)
        else {
            return Err(gone());
        };
        if constant_time_eq(&challenge.code_mac, &self.mac(session, code)) {
            return Ok(Ok(challenge.phone.clone()));
        }
        challenge.attempts += 1;
        let left = self.config.max_attempts.saturating_sub(challenge.attempts);
        if left == 0 {
            state.challenges.remove(session);
        }
        Ok(Err(left))
    }

    /// Consumes a sign-in code; returns the number it was sent to.
    pub fn consume_login(&self, session: &str, code: &str) -> Result<String> {
        let mut state = self.state.lock();
        match self.check_code(&mut state, session, code, Purpose::Login, session_gone)? {
            Ok(phone) => {
                state.challenges.remove(session);
                if state.login_by_phone.get(&phone).map(String::as_str) == Some(session) {
                    state.login_by_phone.remove(&phone);
                }
                Ok(phone)
            }
            Err(0) => Err(Error::forbidden(
                "Wrong code, and that was the last try for it: request a new code",
            )),
            Err(left) => Err(Error::forbidden(format!(
                "Wrong code; {left} more {} before this code stops working",
                if left == 1 { "try" } else { "tries" }
            ))),
        }
    }

    /// Starts (or, with a higher `send_attempt`, resends) a 3PID verification of
    /// `phone`. The same `client_secret`, number and `send_attempt` again gets
    /// the same session without another SMS, as the spec asks.
    pub async fn request_threepid(
        &self,
        purpose: Purpose,
        client_secret: &str,
        phone: &str,
        send_attempt: u64,
    ) -> Result<String> {
        let existing = {
            let mut state = self.state.lock();
            Self::prune(&mut state, Instant::now());
            state
                .challenges
                .iter()
                .find(|(_, c)| {
                    c.purpose == purpose
                        && c.phone == phone
                        && c.client_secret.as_deref() == Some(client_secret)
                })
                .map(|(sid, c)| (sid.clone(), c.send_attempt))
        };
        if let Some((sid, last_attempt)) = &existing
            && send_attempt <= *last_attempt
        {
            return Ok(sid.clone());
        }
        let sid = existing
            .map(|(sid, _)| sid)
            .unwrap_or_else(|| random_string_from(ALPHANUMERIC, 24));
        let code = Self::new_code();
        self.send_code(phone, &code).await?;
        let challenge = Challenge {
            purpose,
            phone: phone.to_owned(),
            code_mac: self.mac(&sid, &code),
            expires: Instant::now() + self.lifetime(),
            attempts: 0,
            client_secret: Some(client_secret.to_owned()),
            send_attempt,
            validated_at: None,
        };
        self.state.lock().challenges.insert(sid.clone(), challenge);
        Ok(sid)
    }

    fn threepid_purpose(&self, state: &State, sid: &str, client_secret: &str) -> Result<Purpose> {
        state
            .challenges
            .get(sid)
            .filter(|c| {
                c.client_secret
                    .as_deref()
                    .is_some_and(|s| constant_time_eq(s.as_bytes(), client_secret.as_bytes()))
            })
            .map(|c| c.purpose)
            .ok_or_else(threepid_session_gone)
    }

    /// The code of a 3PID session, entered at `submit_url`. False: a wrong code.
    pub fn submit_token(&self, sid: &str, client_secret: &str, token: &str) -> Result<bool> {
        let mut state = self.state.lock();
        let purpose = self.threepid_purpose(&state, sid, client_secret)?;
        if purpose == Purpose::Login {
            return Err(threepid_session_gone());
        }
        match self.check_code(&mut state, sid, token, purpose, threepid_session_gone)? {
            Ok(_) => {
                if let Some(c) = state.challenges.get_mut(sid) {
                    c.validated_at.get_or_insert_with(now_ms);
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// The number a 3PID session of `purpose` has verified.
    pub fn verified(
        &self,
        sid: &str,
        client_secret: &str,
        purpose: Purpose,
    ) -> Result<VerifiedPhone> {
        let state = self.state.lock();
        if self.threepid_purpose(&state, sid, client_secret)? != purpose {
            return Err(threepid_session_gone());
        }
        let c = state
            .challenges
            .get(sid)
            .filter(|c| c.expires > Instant::now())
            .ok_or_else(threepid_session_gone)?;
        let validated_at = c.validated_at.ok_or_else(|| {
            Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ThreepidAuthFailed,
                "The phone number has not been verified yet: submit the code from the SMS \
                 to the submit_url first",
            )
        })?;
        Ok(VerifiedPhone {
            sid: sid.to_owned(),
            phone: c.phone.clone(),
            validated_at,
        })
    }

    /// Ends a 3PID session once its number is bound.
    pub fn forget(&self, sid: &str) {
        self.state.lock().challenges.remove(sid);
    }

    async fn deliver(&self, to: &str, text: &str) -> Result<()> {
        let c = &self.config;
        match c.provider {
            SmsProvider::Log => {
                tracing::info!(to, text, "SMS (log provider; not sent)");
                Ok(())
            }
            SmsProvider::Webhook => {
                let url = c.webhook_url.as_deref().unwrap_or_default();
                let body = serde_json::to_vec(&serde_json::json!({ "to": to, "text": text }))?;
                let signature =
                    webhook_signature(c.webhook_secret.as_deref().unwrap_or_default(), &body);
                let response = self
                    .http
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header("X-Bigd-Signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| provider_failed(format!("webhook unreachable: {e}")))?;
                if !response.status().is_success() {
                    return Err(provider_failed(format!(
                        "webhook answered HTTP {}",
                        response.status()
                    )));
                }
                Ok(())
            }
            SmsProvider::Twilio => {
                let sid = c.twilio_account_sid.as_deref().unwrap_or_default();
                let url = format!(
                    "{}/2010-04-01/Accounts/{}/Messages.json",
                    c.twilio_api_base.trim_end_matches('/'),
                    form_encode(sid)
                );
                let from = c.twilio_from.as_deref().unwrap_or_default();
                // A messaging service SID (MG...) sends from the service's pool.
                let from_field = if from.starts_with("MG") {
                    "MessagingServiceSid"
                } else {
                    "From"
                };
                let body = format!(
                    "To={}&{from_field}={}&Body={}",
                    form_encode(to),
                    form_encode(from),
                    form_encode(text)
                );
                let response = self
                    .http
                    .post(url)
                    .basic_auth(sid, c.twilio_auth_token.as_deref())
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| provider_failed(format!("Twilio unreachable: {e}")))?;
                let status = response.status();
                if !status.is_success() {
                    let detail = response.text().await.unwrap_or_default();
                    let detail: String = detail.chars().take(200).collect();
                    return Err(provider_failed(format!(
                        "Twilio answered HTTP {status}: {detail}"
                    )));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::{Router, extract::State, http::HeaderMap, routing::post};

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    async fn capture(
        State(seen): State<Seen>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, &'static str) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        seen.lock().push((uri.path().to_owned(), auth, body));
        (StatusCode::CREATED, r#"{"sid":"SM1"}"#)
    }

    fn decode_form(body: &str) -> HashMap<String, String> {
        body.split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| {
                let v = v.replace('+', " ");
                let mut out = Vec::new();
                let bytes = v.as_bytes();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' {
                        out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                (k.to_owned(), String::from_utf8(out).unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn twilio_request_shape() {
        let seen: Seen = Default::default();
        let app = Router::new()
            .route("/{*rest}", post(capture))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let config = SmsConfig {
            provider: SmsProvider::Twilio,
            twilio_account_sid: Some("AC123".into()),
            twilio_auth_token: Some("tok".into()),
            twilio_from: Some("+15550001111".into()),
            twilio_api_base: format!("http://{addr}/"),
            ..SmsConfig::default()
        };
        let sms = Sms::new(config).unwrap();
        let sent = sms.request_login("+447700900123").await.unwrap();
        assert!(!sent.session.is_empty());

        let seen = seen.lock();
        let (path, auth, body) = &seen[0];
        assert_eq!(path, "/2010-04-01/Accounts/AC123/Messages.json");
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode("AC123:tok");
        assert_eq!(auth, &format!("Basic {expected}"));
        let form = decode_form(body);
        assert_eq!(form["To"], "+447700900123");
        assert_eq!(form["From"], "+15550001111");
        let runs: Vec<&str> = form["Body"]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|run| run.len() == 6)
            .collect();
        assert_eq!(runs.len(), 1, "{}", form["Body"]);
        // The code that was sent signs in; the session is then spent.
        assert_eq!(
            sms.consume_login(&sent.session, runs[0]).unwrap(),
            "+447700900123"
        );
        assert!(sms.consume_login(&sent.session, runs[0]).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_502_and_frees_the_resend_slot() {
        let config = SmsConfig {
            provider: SmsProvider::Twilio,
            twilio_account_sid: Some("AC123".into()),
            twilio_auth_token: Some("tok".into()),
            twilio_from: Some("+15550001111".into()),
            // Port 9 (discard) on loopback: nothing listens there.
            twilio_api_base: "http://127.0.0.1:9".into(),
            ..SmsConfig::default()
        };
        let sms = Sms::new(config).unwrap();
        for _ in 0..2 {
            let e = sms.request_login("+447700900123").await.unwrap_err();
            let Error::Matrix { status, .. } = e else {
                panic!("{e}")
            };
            assert_eq!(status, StatusCode::BAD_GATEWAY);
        }
    }

    #[test]
    fn message_has_one_run_of_six_digits() {
        let text = message_text("012345", Duration::from_secs(600));
        let runs = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|r| r.len() == 6)
            .count();
        assert_eq!(runs, 1);
        assert!(!text.contains("0123456"));
        assert_eq!(form_encode("a b+c"), "a+b%2Bc");
    }
}
