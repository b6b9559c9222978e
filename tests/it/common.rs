//! The test harness: bigd started in-process on an ephemeral loopback port with a
//! temporary data folder, driven over real HTTP.

use std::path::PathBuf;

use bigd::{Server, config::Config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    server: Option<Server>,
    _dir: TempDir,
    config: Config,
    pub base: String,
    pub http: reqwest::Client,
}

/// A logged-in device.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub refresh_token: Option<String>,
}

pub fn test_config(data_dir: PathBuf) -> Config {
    let mut config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        data_dir,
        ..Config::default()
    };
    config.rate_limits.enabled = false;
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        bigd::util::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path().to_path_buf());
        adjust(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        let base = server.base_url();
        Self {
            server: Some(server),
            _dir: dir,
            config,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the server (flushing storage) and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
        let server = Server::start(self.config.clone())
            .await
            .expect("server restarts");
        self.base = server.base_url();
        self.server = Some(server);
    }

    /// Like `restart`, with the config changed first.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        adjust(&mut self.config);
        self.restart().await;
    }

    pub fn services(&self) -> &bigd::Services {
        &self.server.as_ref().unwrap().services
    }

    pub fn create_registration_token(&self, token: Option<&str>, uses: Option<u64>) -> String {
        self.services()
            .auth
            .registration_tokens
            .create(token.map(Into::into), uses, None)
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, token, body).await
    }

    /// Registers `username` with the dummy stage and returns the new session.
    pub async fn register(&self, username: &str) -> Session {
        self.register_with(json!({ "username": username, "password": PASSWORD }))
            .await
    }

    pub async fn register_with(&self, mut body: Value) -> Session {
        body["auth"] = json!({ "type": "m.login.dummy" });
        let (status, resp) = self.post("/_matrix/client/v3/register", None, body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        session_from(&resp)
    }

    pub async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": username }, "password": password }),
        )
        .await
    }

    pub async fn login_ok(&self, username: &str) -> Session {
        let (status, resp) = self.login(username, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        session_from(&resp)
    }
}

pub fn session_from(resp: &Value) -> Session {
    Session {
        user_id: resp["user_id"].as_str().unwrap().to_owned(),
        device_id: resp["device_id"].as_str().unwrap().to_owned(),
        token: resp["access_token"].as_str().unwrap().to_owned(),
        refresh_token: resp["refresh_token"].as_str().map(str::to_owned),
    }
}

/// Asserts a Matrix error response.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(got.0.as_u16(), status, "unexpected status, body: {}", got.1);
    assert_eq!(
        got.1["errcode"], errcode,
        "unexpected errcode, body: {}",
        got.1
    );
    assert!(
        got.1["error"].as_str().is_some_and(|m| !m.is_empty()),
        "errors carry a message: {}",
        got.1
    );
}

/// The password stage of user-interactive auth for `user`.
pub fn password_auth(user: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
    });
    if let Some(s) = session {
        auth["session"] = json!(s);
    }
    auth
}

impl TestServer {
    pub async fn create_room(&self, who: &Session, body: Value) -> String {
        let (status, resp) = self
            .post("/_matrix/client/v3/createRoom", Some(&who.token), body)
            .await;
        assert_eq!(status, StatusCode::OK, "createRoom: {resp}");
        resp["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends a text message with a fresh transaction id; returns the response.
    pub async fn send_text(&self, who: &Session, room: &str, text: &str) -> (StatusCode, Value) {
        let txn = format!(
            "t{}",
            TXN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(&who.token),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await
    }

    pub async fn send_ok(&self, who: &Session, room: &str, text: &str) -> String {
        let (status, resp) = self.send_text(who, room, text).await;
        assert_eq!(status, StatusCode::OK, "send: {resp}");
        resp["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn join(&self, who: &Session, room: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&who.token),
            json!({}),
        )
        .await
    }

    pub async fn invite(&self, who: &Session, room: &str, user: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&who.token),
            json!({ "user_id": user }),
        )
        .await
    }
}

/// A server where alice created a public room that bob joined.
pub async fn alice_and_bob_in_a_public_room() -> (TestServer, Session, Session, String) {
    alice_and_bob_in_a_public_room_of(TestServer::start().await).await
}

/// [`alice_and_bob_in_a_public_room`] on a server started with its own config.
pub async fn alice_and_bob_in_a_public_room_of(
    s: TestServer,
) -> (TestServer, Session, Session, String) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    (s, alice, bob, room)
}

static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// `GET /sync?{query}` as `who`, asserting success.
pub async fn sync(s: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/sync?{query}"),
            Some(&who.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
