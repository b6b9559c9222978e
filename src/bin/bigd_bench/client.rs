//! A minimal Matrix Client-Server API client: only what the scenarios need, with
//! every request bounded by a timeout and every failure turned into a countable
//! [`ReqError`] (never a panic).

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const API: &str = "/_matrix/client/v3";

/// One failed request. `key` groups failures for the report ("429 M_LIMIT_EXCEEDED",
/// "timeout", "connect", ...); `detail` is for a person.
#[derive(Debug, Clone)]
pub struct ReqError {
    pub key: String,
    pub detail: String,
    pub status: Option<u16>,
    pub body: Option<Value>,
}

impl fmt::Display for ReqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        match self.status {
            Some(429) => f.write_str(
                " (the server is rate limiting: disable its rate limits for benchmarking, \
                 for bigd BIGD_RATE_LIMITS__ENABLED=false)",
            ),
            Some(404) => f.write_str(" (the server does not implement this endpoint)"),
            _ => Ok(()),
        }
    }
}

impl ReqError {
    fn transport(what: &str, e: &reqwest::Error) -> Self {
        let key = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        Self {
            key: key.into(),
            detail: format!("{what}: {key} error: {e}"),
            status: None,
            body: None,
        }
    }
}

/// A logged-in user (or, with an empty token, an anonymous one that can register).
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub user_id: String,
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct Session {
    user_id: String,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct RoomIdResponse {
    room_id: String,
}

#[derive(Deserialize)]
struct EventIdResponse {
    event_id: String,
}

/// The fields of a `/messages` response the history scenario looks at.
#[derive(Deserialize)]
pub struct MessagesPage {
    #[serde(default)]
    pub chunk: Vec<PageEvent>,
    pub end: Option<String>,
}

#[derive(Deserialize)]
pub struct PageEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The fields of a `/sync` response the sync scenarios look at.
#[derive(Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
}

#[derive(Deserialize, Default)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: std::collections::HashMap<String, JoinedRoom>,
}

#[derive(Deserialize, Default)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Deserialize, Default)]
pub struct Timeline {
    #[serde(default)]
    pub events: Vec<TimelineEvent>,
    #[serde(default)]
    pub limited: bool,
}

#[derive(Deserialize)]
pub struct TimelineEvent {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub content: Value,
}

impl Client {
    pub fn anonymous(http: reqwest::Client, base: &str, timeout: Duration) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: String::new(),
            user_id: String::new(),
            timeout,
        }
    }

    fn logged_in(&self, session: Session, token: String) -> Self {
        Self {
            token,
            user_id: session.user_id,
            ..self.clone()
        }
    }

    /// Sends one request and decodes the JSON answer; returns it with the body size.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(T, usize), ReqError> {
        let (value, size, _) = self.call_timed(method, path, body, timeout).await?;
        Ok((value, size))
    }

    /// `call`, also giving when the whole response had arrived (microseconds
    /// since the epoch), before it was parsed.
    async fn call_timed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(T, usize, u64), ReqError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ReqError::transport(&what, &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ReqError::transport(&what, &e))?;
        let arrived = super::scenarios::epoch_micros();
        if !status.is_success() {
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let errcode = body
                .as_ref()
                .and_then(|b| b["errcode"].as_str())
                .unwrap_or("")
                .to_owned();
            let message = body
                .as_ref()
                .and_then(|b| b["error"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into());
            return Err(ReqError {
                key: format!("{} {errcode}", status.as_u16())
                    .trim_end()
                    .to_owned(),
                detail: format!("{what}: HTTP {status} {errcode}: {message}"),
                status: Some(status.as_u16()),
                body,
            });
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ReqError {
            key: "bad response".into(),
            detail: format!("{what}: unexpected response body: {e}"),
            status: Some(status.as_u16()),
            body: None,
        })?;
        Ok((value, bytes.len(), arrived))
    }

    /// Registers `username` with one user-interactive auth stage: the registration
    /// token if given, else `m.login.dummy`. The stage is sent on the first request
    /// (servers accept that); a server that insists on a session first gets it.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        registration_token: Option<&str>,
    ) -> Result<Client, ReqError> {
        let auth = match registration_token {
            Some(token) => json!({ "type": "m.login.registration_token", "token": token }),
            None => json!({ "type": "m.login.dummy" }),
        };
        let mut body = json!({
            "username": username,
            "password": password,
            "initial_device_display_name": "bigd-bench",
            "auth": auth,
        });
        let path = format!("{API}/register");
        let session: Session = match self
            .call(Method::POST, &path, Some(&body), self.timeout)
            .await
        {
            Ok((s, _)) => s,
            Err(e) if e.status == Some(401) => {
                let uia = e.body.as_ref().and_then(|b| b["session"].as_str());
                let Some(uia) = uia else { return Err(e) };
                body["auth"]["session"] = json!(uia);
                self.call(Method::POST, &path, Some(&body), self.timeout)
                    .await?
                    .0
            }
            Err(e) => return Err(e),
        };
        match session.access_token.clone() {
            Some(token) => Ok(self.logged_in(session, token)),
            None => self.login(username, password).await,
        }
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<Client, ReqError> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": username },
            "password": password,
            "initial_device_display_name": "bigd-bench",
        });
        let (session, _): (Session, _) = self
            .call(
                Method::POST,
                &format!("{API}/login"),
                Some(&body),
                self.timeout,
            )
            .await?;
        let token = session.access_token.clone().ok_or_else(|| ReqError {
            key: "bad response".into(),
            detail: "POST /login: no access_token in the response".into(),
            status: Some(200),
            body: None,
        })?;
        Ok(self.logged_in(session, token))
    }

    pub async fn create_room(&self, body: &Value) -> Result<String, ReqError> {
        let (r, _): (RoomIdResponse, _) = self
            .call(
                Method::POST,
                &format!("{API}/createRoom"),
                Some(body),
                self.timeout,
            )
            .await?;
        Ok(r.room_id)
    }

    pub async fn join(&self, room: &str) -> Result<String, ReqError> {
        let (r, _): (RoomIdResponse, _) = self
            .call(
                Method::POST,
                &format!("{API}/join/{}", encode(room)),
                Some(&json!({})),
                self.timeout,
            )
            .await?;
        Ok(r.room_id)
    }

    /// Sends an `m.room.message`; returns the event id.
    pub async fn send(&self, room: &str, txn: &str, content: &Value) -> Result<String, ReqError> {
        let path = format!(
            "{API}/rooms/{}/send/m.room.message/{}",
            encode(room),
            encode(txn)
        );
        let (r, _): (EventIdResponse, _) = self
            .call(Method::PUT, &path, Some(content), self.timeout)
            .await?;
        Ok(r.event_id)
    }

    /// Sets an http pusher whose gateway is `url`.
    pub async fn set_pusher(&self, url: &str, pushkey: &str) -> Result<(), ReqError> {
        let body = json!({
            "kind": "http",
            "app_id": "ai.iambig.bench",
            "pushkey": pushkey,
            "app_display_name": "bigd-bench",
            "device_display_name": "bench",
            "lang": "en",
            "data": { "url": url },
        });
        let _: (Value, _) = self
            .call(
                Method::POST,
                &format!("{API}/pushers/set"),
                Some(&body),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// One page of `GET /rooms/{id}/messages`.
    pub async fn messages(
        &self,
        room: &str,
        dir: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<MessagesPage, ReqError> {
        let mut path = format!(
            "{API}/rooms/{}/messages?dir={dir}&limit={limit}",
            encode(room)
        );
        if let Some(from) = from {
            path.push_str("&from=");
            path.push_str(&encode(from));
        }
        Ok(self.call(Method::GET, &path, None, self.timeout).await?.0)
    }

    /// `GET /sync`. The server may hold the request for `timeout_ms`, so the
    /// client waits that long plus 10 s before giving up.
    pub async fn sync(
        &self,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> Result<(SyncResponse, usize), ReqError> {
        let (resp, size, _) = self.sync_timed(since, timeout_ms, filter).await?;
        Ok((resp, size))
    }

    /// `sync`, also giving when the response had arrived, before parsing.
    pub async fn sync_timed(
        &self,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> Result<(SyncResponse, usize, u64), ReqError> {
        let mut path = format!("{API}/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&encode(since));
        }
        if let Some(filter) = filter {
            path.push_str("&filter=");
            path.push_str(&encode(filter));
        }
        let timeout = Duration::from_millis(timeout_ms) + Duration::from_secs(10);
        self.call_timed(Method::GET, &path, None, timeout).await
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so room ids,
/// event ids and tokens can go into a path segment or a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_only() {
        assert_eq!(encode("!abc:example.org"), "%21abc%3Aexample.org");
        assert_eq!(encode("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("t1-2_3.4~"), "t1-2_3.4~");
    }
}
