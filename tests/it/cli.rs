//! The `bigd` binary: admin commands on the data folder, config errors, serving.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::common::*;

fn bigd(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bigd"));
    cmd.env("BIGD_DATA_DIR", data_dir).env("BIGD_LOG", "warn");
    cmd
}

#[tokio::test]
async fn admin_commands_work_on_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = bigd(dir.path())
        .args(["create-user", "--username", "admin", "--password", PASSWORD])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@admin:localhost"));

    let out = bigd(dir.path())
        .args(["create-user", "--username", "admin", "--password", PASSWORD])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a taken name is refused");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "a fresh password!\n").unwrap();
    let out = bigd(dir.path())
        .args([
            "reset-password",
            "--user",
            "@admin:localhost",
            "--password-file",
        ])
        .arg(&pw_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bigd(dir.path())
        .args(["reset-password", "--user", "ghost", "--password", PASSWORD])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let out = bigd(dir.path())
        .args(["create-registration-token", "--uses", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 16);
    let out = bigd(dir.path())
        .args(["create-registration-token", "--token", "bad token!"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The server sees what the commands wrote.
    let mut config = test_config(dir.path().to_path_buf());
    config.registration.tokens_required = true;
    let server = bigd::Server::start(config).await.unwrap();
    let http = {
        bigd::util::install_tls_provider();
        reqwest::Client::new()
    };
    let base = server.base_url();
    let login = |pw: &str| {
        http.post(format!("{base}/_matrix/client/v3/login"))
            .json(&json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "admin" }, "password": pw }))
            .send()
    };
    assert_eq!(login("a fresh password!").await.unwrap().status(), 200);
    assert_eq!(login(PASSWORD).await.unwrap().status(), 403);
    let resp = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({ "username": "newbie", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": token } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.shutdown().await.unwrap();
}

#[test]
fn invalid_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bigd(dir.path())
        .env("BIGD_REGISTRATION__ENABLED", "perhaps")
        .arg("create-registration-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registration.enabled"), "{err}");

    let file = dir.path().join("bigd.toml");
    std::fs::write(&file, "listen = [\"not an address\"]\n").unwrap();
    let out = bigd(dir.path())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));

    let out = bigd(dir.path())
        .args(["--config", "/nonexistent/bigd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn open_registration_on_a_public_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = bigd(dir.path())
        .env("BIGD_LISTEN", "[\"0.0.0.0:0\"]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open_on_public_listener"), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_serves_on_its_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = bigd(dir.path())
        .env("BIGD_LISTEN", format!("[\"127.0.0.1:{port}\"]"))
        .env("BIGD_SERVER_NAME", "example.test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    bigd::util::install_tls_provider();
    let url = format!("http://127.0.0.1:{port}/_matrix/client/versions");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = reqwest::get(&url).await {
            assert_eq!(resp.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "bigd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = {
        bigd::util::install_tls_provider();
        reqwest::Client::new()
    }
    .post(format!(
        "http://127.0.0.1:{port}/_matrix/client/v3/register"
    ))
    .json(
        &json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
    )
    .send()
    .await
    .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["user_id"], "@alice:example.test");
    assert!(dir.path().join("keys/access_token.key").exists());

    // SIGTERM (to the process we started) stops it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "bigd did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn admin_password_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = bigd(dir.path())
        .env("BIGD_ADMIN_PASSWORD", PASSWORD)
        .args(["create-user", "--username", "Env"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@env:localhost"));
}

#[tokio::test]
async fn delete_user_media_removes_a_users_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path().to_path_buf());
    let server = bigd::Server::start(config.clone()).await.unwrap();
    let http = {
        bigd::util::install_tls_provider();
        reqwest::Client::new()
    };
    let base = server.base_url();
    let resp: serde_json::Value = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({ "username": "mallory", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = resp["access_token"].as_str().unwrap().to_owned();
    let uploaded: serde_json::Value = http
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("spam")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    server.shutdown().await.unwrap();

    let out = bigd(dir.path())
        .args(["delete-user-media", "--user", "mallory"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 1 media of @mallory:localhost"));

    let server = bigd::Server::start(config).await.unwrap();
    let base = server.base_url();
    let status = http
        .get(format!("{base}/_matrix/media/v3/download/localhost/{id}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    server.shutdown().await.unwrap();
}
