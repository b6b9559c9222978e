//! Sign-in by SMS code and phone numbers as 3PIDs, with the `webhook` provider
//! pointed at a real HTTP server on loopback that checks the signature,
//! captures the codes and can be switched down.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use bigd::config::{Config, RateLimit, SmsProvider};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const SECRET: &str = "webhook-test-secret";

#[derive(Clone, Default)]
struct Gateway {
    messages: Arc<Mutex<Vec<(String, String)>>>,
    down: Arc<AtomicBool>,
    bad_signatures: Arc<AtomicUsize>,
}

async fn receive(State(gw): State<Gateway>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let expected = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, &body);
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let got = headers
        .get("x-bigd-signature")
        .and_then(|v| v.to_str().ok());
    if got != Some(expected.as_str()) {
        gw.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if gw.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    gw.messages.lock().push((
        v["to"].as_str().unwrap().to_owned(),
        v["text"].as_str().unwrap().to_owned(),
    ));
    StatusCode::OK
}

impl Gateway {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn count(&self) -> usize {
        self.messages.lock().len()
    }

    /// The code of the last SMS to `to`: the only run of 6 digits in its text.
    fn last_code(&self, to: &str) -> String {
        let messages = self.messages.lock();
        let (_, text) = messages
            .iter()
            .rev()
            .find(|(t, _)| t == to)
            .unwrap_or_else(|| panic!("no SMS to {to}"));
        let runs: Vec<&str> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|r| r.len() == 6)
            .collect();
        assert_eq!(runs.len(), 1, "one 6-digit run in {text:?}");
        runs[0].to_owned()
    }
}

async fn with_gateway(adjust: impl FnOnce(&mut Config)) -> (TestServer, Gateway) {
    let gw = Gateway::default();
    let app = Router::new()
        .route("/send", post(receive))
        .with_state(gw.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = TestServer::start_with(|c| {
        c.sms.provider = SmsProvider::Webhook;
        c.sms.webhook_url = Some(format!("http://{addr}/send"));
        c.sms.webhook_secret = Some(SECRET.into());
        c.sms.resend_interval_ms = 0;
        adjust(c);
    })
    .await;
    (s, gw)
}

const REQUEST: &str = "/_matrix/client/unstable/ai.iambig/sms/request";

async fn request_code(s: &TestServer, phone: &str) -> (StatusCode, Value) {
    s.post(REQUEST, None, json!({ "phone": phone })).await
}

async fn sms_login(s: &TestServer, session: &str, code: &str, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({ "type": "ai.iambig.login.sms", "session": session, "code": code });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.post("/_matrix/client/v3/login", None, body).await
}

/// Requests a code for `phone` and signs in with it.
async fn sign_in(s: &TestServer, gw: &Gateway, phone: &str, e164: &str) -> Session {
    let (status, sent) = request_code(s, phone).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let code = gw.last_code(e164);
    let got = sms_login(s, sent["session"].as_str().unwrap(), &code, json!({})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    session_from(&got.1)
}

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[tokio::test]
async fn sms_sign_up_then_sign_in_on_a_second_device() {
    let (s, gw) = with_gateway(|_| {}).await;
    let (status, flows) = s.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "ai.iambig.login.sms"),
        "{flows}"
    );
    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["ai.iambig.sms"], true);

    let national = request_code(&s, "07700 900123").await;
    assert_error(&national, 400, "M_INVALID_PARAM");

    let (status, sent) = request_code(&s, "+44 7700-900123").await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["expires_in_ms"], 600_000);
    assert_eq!(sent["resend_after_ms"], 0);
    let code = gw.last_code("+447700900123");
    let (status, first) = sms_login(
        &s,
        sent["session"].as_str().unwrap(),
        &code,
        json!({ "device_id": "PHONE1", "initial_device_display_name": "my phone", "refresh_token": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["device_id"], "PHONE1");
    assert!(first["refresh_token"].is_string());
    let first = session_from(&first);

    let (_, me) = s
        .get("/_matrix/client/v3/account/whoami", Some(&first.token))
        .await;
    assert_eq!(me["user_id"], first.user_id.as_str());
    assert!(first.user_id.starts_with("@u"), "{}", first.user_id);
    let (_, threepids) = s
        .get("/_matrix/client/v3/account/3pid", Some(&first.token))
        .await;
    assert_eq!(threepids["threepids"][0]["medium"], "msisdn");
    assert_eq!(threepids["threepids"][0]["address"], "447700900123");

    // Again, from another device: the same account.
    let second = sign_in(&s, &gw, "0044 7700 900123", "+447700900123").await;
    assert_eq!(second.user_id, first.user_id);
    assert_ne!(second.device_id, first.device_id);
    assert_eq!(gw.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn five_wrong_codes_kill_the_session() {
    let (s, gw) = with_gateway(|_| {}).await;
    let (_, sent) = request_code(&s, "+447700900200").await;
    let session = sent["session"].as_str().unwrap();
    let code = gw.last_code("+447700900200");
    for _ in 0..5 {
        let got = sms_login(&s, session, &wrong(&code), json!({})).await;
        assert_error(&got, 403, "M_FORBIDDEN");
    }
    let got = sms_login(&s, session, &code, json!({})).await;
    assert_error(&got, 403, "M_FORBIDDEN");
    assert!(
        got.1["error"]
            .as_str()
            .unwrap()
            .contains("request a new code")
    );
    // Not a code at all: refused without counting.
    let got = sms_login(&s, session, "12ab", json!({})).await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    // A new code works.
    sign_in(&s, &gw, "+447700900200", "+447700900200").await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let (s, gw) = with_gateway(|c| c.sms.code_lifetime_ms = 1_000).await;
    let (_, sent) = request_code(&s, "+447700900300").await;
    assert_eq!(sent["expires_in_ms"], 1_000);
    let code = gw.last_code("+447700900300");
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let got = sms_login(&s, sent["session"].as_str().unwrap(), &code, json!({})).await;
    assert_error(&got, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn codes_are_rate_limited_per_number_and_per_ip() {
    let (s, _gw) = with_gateway(|c| {
        c.rate_limits.enabled = true;
        c.sms.rate_limit_per_number = RateLimit {
            per_second: 0.001,
            burst: 2,
        };
        c.sms.rate_limit_per_ip = RateLimit {
            per_second: 0.001,
            burst: 4,
        };
    })
    .await;
    for _ in 0..2 {
        assert_eq!(request_code(&s, "+447700900400").await.0, StatusCode::OK);
    }
    let limited = request_code(&s, "+447700900400").await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().unwrap() > 0);
    // Another number is not limited by the first one's limit...
    assert_eq!(request_code(&s, "+447700900401").await.0, StatusCode::OK);
    // ...but this IP has now used its 4 requests.
    let limited = request_code(&s, "+447700900402").await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn no_resend_before_the_interval() {
    let (s, gw) = with_gateway(|c| c.sms.resend_interval_ms = 60_000).await;
    let (status, sent) = request_code(&s, "+447700900500").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sent["resend_after_ms"], 60_000);
    let again = request_code(&s, "+447700900500").await;
    assert_error(&again, 429, "M_LIMIT_EXCEEDED");
    let wait = again.1["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 60_000, "{wait}");
    assert_eq!(gw.count(), 1);
    // The first code still works.
    let code = gw.last_code("+447700900500");
    let got = sms_login(&s, sent["session"].as_str().unwrap(), &code, json!({})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

#[tokio::test]
async fn provider_down_is_a_502_and_the_code_survives() {
    let (s, gw) = with_gateway(|_| {}).await;
    let (_, sent) = request_code(&s, "+447700900600").await;
    let code = gw.last_code("+447700900600");

    gw.set_down(true);
    let failed = request_code(&s, "+447700900600").await;
    assert_error(&failed, 502, "M_UNKNOWN");
    assert!(
        failed.1["error"].as_str().unwrap().contains("SMS provider"),
        "{}",
        failed.1
    );
    let fresh = request_code(&s, "+447700900601").await;
    assert_error(&fresh, 502, "M_UNKNOWN");
    gw.set_down(false);

    // The code sent before the failure was not consumed.
    let got = sms_login(&s, sent["session"].as_str().unwrap(), &code, json!({})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    // A number whose send failed can ask again at once.
    sign_in(&s, &gw, "+447700900601", "+447700900601").await;
    assert_eq!(gw.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn auto_register_off_refuses_unknown_numbers() {
    let (s, gw) = with_gateway(|c| c.sms.auto_register = false).await;
    let (_, sent) = request_code(&s, "+447700900700").await;
    let code = gw.last_code("+447700900700");
    let got = sms_login(&s, sent["session"].as_str().unwrap(), &code, json!({})).await;
    assert_error(&got, 403, "M_FORBIDDEN");
}

/// Verifies `phone` through `endpoint` (a requestToken path) and its submit_url;
/// returns the session id.
async fn verify_number(
    s: &TestServer,
    gw: &Gateway,
    endpoint: &str,
    secret: &str,
    country: &str,
    phone: &str,
    e164: &str,
) -> String {
    let (status, resp) = s
        .post(
            endpoint,
            None,
            json!({ "client_secret": secret, "country": country, "phone_number": phone, "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let sid = resp["sid"].as_str().unwrap().to_owned();
    let submit_url = resp["submit_url"].as_str().unwrap().to_owned();
    assert!(
        submit_url.ends_with("/_matrix/client/unstable/ai.iambig/msisdn/submit_token"),
        "{submit_url}"
    );
    let code = gw.last_code(e164);
    let submit = |token: String| {
        let body = json!({ "sid": sid, "client_secret": secret, "token": token });
        let req = s.http.post(&submit_url).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(submit(wrong(&code)).await["success"], false);
    assert_eq!(submit(code.clone()).await["success"], true);
    sid
}

const ADD_TOKEN: &str = "/_matrix/client/v3/account/3pid/msisdn/requestToken";
const REGISTER_TOKEN: &str = "/_matrix/client/v3/register/msisdn/requestToken";

async fn add_number(s: &TestServer, who: &Session, sid: &str, secret: &str) -> (StatusCode, Value) {
    let body = json!({ "sid": sid, "client_secret": secret });
    let (status, uia) = s
        .post(
            "/_matrix/client/v3/account/3pid/add",
            Some(&who.token),
            body.clone(),
        )
        .await;
    if status != StatusCode::UNAUTHORIZED {
        return (status, uia);
    }
    let mut body = body;
    body["auth"] = password_auth(&who.user_id, uia["session"].as_str());
    s.post(
        "/_matrix/client/v3/account/3pid/add",
        Some(&who.token),
        body,
    )
    .await
}

#[tokio::test]
async fn msisdn_add_list_login_and_delete() {
    let (s, gw) = with_gateway(|_| {}).await;
    let alice = s.register("alice").await;
    let sid = verify_number(
        &s,
        &gw,
        ADD_TOKEN,
        "secret-a",
        "GB",
        "07700 900800",
        "+447700900800",
    )
    .await;
    let (status, resp) = add_number(&s, &alice, &sid, "secret-a").await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    let (_, list) = s
        .get("/_matrix/client/v3/account/3pid", Some(&alice.token))
        .await;
    let threepids = list["threepids"].as_array().unwrap();
    assert_eq!(threepids.len(), 1, "{list}");
    assert_eq!(threepids[0]["medium"], "msisdn");
    assert_eq!(threepids[0]["address"], "447700900800");
    assert!(threepids[0]["added_at"].as_u64().unwrap() > 0);

    // Password login by phone number, in both identifier forms.
    for identifier in [
        json!({ "type": "m.id.phone", "country": "GB", "phone": "07700 900800" }),
        json!({ "type": "m.id.thirdparty", "medium": "msisdn", "address": "447700900800" }),
    ] {
        let (status, resp) = s
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({ "type": "m.login.password", "identifier": identifier, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(resp["user_id"], alice.user_id.as_str());
    }
    // SMS sign-in with the number reaches alice's account.
    let by_sms = sign_in(&s, &gw, "+447700900800", "+447700900800").await;
    assert_eq!(by_sms.user_id, alice.user_id);

    // No identity server: bind is refused, unbind and delete say no-support.
    let bind = s
        .post(
            "/_matrix/client/v3/account/3pid/bind",
            Some(&alice.token),
            json!({ "client_secret": "x", "id_server": "example.org", "id_access_token": "t", "sid": "s" }),
        )
        .await;
    assert_error(&bind, 400, "M_SERVER_NOT_TRUSTED");
    let (status, unbind) = s
        .post(
            "/_matrix/client/v3/account/3pid/unbind",
            Some(&alice.token),
            json!({ "medium": "msisdn", "address": "447700900800" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unbind["id_server_unbind_result"], "no-support");
    let legacy = s
        .post(
            "/_matrix/client/v3/account/3pid",
            Some(&alice.token),
            json!({ "three_pid_creds": { "client_secret": "x", "id_server": "example.org", "sid": "s" } }),
        )
        .await;
    assert_error(&legacy, 403, "M_THREEPID_AUTH_FAILED");

    let (status, deleted) = s
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            Some(&alice.token),
            json!({ "medium": "msisdn", "address": "447700900800" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id_server_unbind_result"], "no-support");
    let (_, list) = s
        .get("/_matrix/client/v3/account/3pid", Some(&alice.token))
        .await;
    assert!(
        list["threepids"].as_array().is_none_or(Vec::is_empty),
        "{list}"
    );
    let again = s
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            Some(&alice.token),
            json!({ "medium": "msisdn", "address": "447700900800" }),
        )
        .await;
    assert_error(&again, 404, "M_NOT_FOUND");
    let (status, _) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.phone", "country": "GB", "phone": "07700900800" }, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn one_number_per_account() {
    let (s, gw) = with_gateway(|_| {}).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    // Both verify the same free number; the first to add it keeps it.
    let sid_a = verify_number(
        &s,
        &gw,
        ADD_TOKEN,
        "secret-a",
        "DE",
        "030 123456",
        "+4930123456",
    )
    .await;
    let sid_b = verify_number(
        &s,
        &gw,
        ADD_TOKEN,
        "secret-b",
        "DE",
        "+49 30 123456",
        "+4930123456",
    )
    .await;
    assert_eq!(
        add_number(&s, &alice, &sid_a, "secret-a").await.0,
        StatusCode::OK
    );
    assert_error(
        &add_number(&s, &bob, &sid_b, "secret-b").await,
        400,
        "M_THREEPID_IN_USE",
    );
    // A bound number cannot be verified again for another account or a registration.
    for endpoint in [ADD_TOKEN, REGISTER_TOKEN] {
        let got = s
            .post(
                endpoint,
                None,
                json!({ "client_secret": "secret-c", "country": "DE", "phone_number": "030123456", "send_attempt": 1 }),
            )
            .await;
        assert_error(&got, 400, "M_THREEPID_IN_USE");
    }
    // A session verified by someone else's secret cannot be used.
    let (status, _) = add_number(&s, &bob, &sid_a, "secret-b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn registration_with_the_msisdn_stage_and_deactivation_frees_the_number() {
    let (s, gw) = with_gateway(|_| {}).await;
    let (status, uia) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "carol", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        uia["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["stages"] == json!(["m.login.msisdn"])),
        "{uia}"
    );
    let sid = verify_number(
        &s,
        &gw,
        REGISTER_TOKEN,
        "secret-r",
        "FR",
        "06 12 34 56 78",
        "+33612345678",
    )
    .await;
    // The same request again (same send_attempt) sends no second SMS.
    let sent = gw.count();
    let (_, again) = s
        .post(
            REGISTER_TOKEN,
            None,
            json!({ "client_secret": "secret-r", "country": "FR", "phone_number": "0612345678", "send_attempt": 1 }),
        )
        .await;
    assert_eq!(again["sid"], sid.as_str());
    assert_eq!(gw.count(), sent);

    let (status, carol) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({
                "username": "carol",
                "password": PASSWORD,
                "auth": {
                    "type": "m.login.msisdn",
                    "session": uia["session"],
                    "threepid_creds": { "sid": sid, "client_secret": "secret-r" },
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{carol}");
    let carol = session_from(&carol);
    let (_, list) = s
        .get("/_matrix/client/v3/account/3pid", Some(&carol.token))
        .await;
    assert_eq!(list["threepids"][0]["address"], "33612345678");
    let by_sms = sign_in(&s, &gw, "+33 6 12 34 56 78", "+33612345678").await;
    assert_eq!(by_sms.user_id, carol.user_id);

    // Deactivation removes the number: signing in with it makes a new account.
    let (status, uia) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, resp) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&carol.token),
            json!({ "auth": password_auth(&carol.user_id, uia["session"].as_str()) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(
        s.services().users.user_by_phone("+33612345678").unwrap(),
        None
    );
    let fresh = sign_in(&s, &gw, "+33612345678", "+33612345678").await;
    assert_ne!(fresh.user_id, carol.user_id);
}

#[tokio::test]
async fn an_account_made_by_sms_confirms_with_a_code() {
    let (s, gw) = with_gateway(|_| {}).await;
    let me = sign_in(&s, &gw, "+447700900900", "+447700900900").await;
    let deactivate = "/_matrix/client/v3/account/deactivate";
    let (status, uia) = s.post(deactivate, Some(&me.token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No password: the only flow is a code sent to the account's number.
    assert_eq!(
        uia["flows"],
        json!([{ "stages": ["ai.iambig.login.sms"] }]),
        "{uia}"
    );
    let (_, sent) = request_code(&s, "+447700900900").await;
    let code = gw.last_code("+447700900900");
    let stage = |code: &str| {
        json!({ "auth": {
            "type": "ai.iambig.login.sms",
            "session": uia["session"],
            "sms_session": sent["session"],
            "code": code,
        } })
    };
    let (status, resp) = s
        .post(deactivate, Some(&me.token), stage(&wrong(&code)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
    let (status, resp) = s.post(deactivate, Some(&me.token), stage(&code)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(
        s.services().users.user_by_phone("447700900900").unwrap(),
        None
    );
}

#[tokio::test]
async fn a_login_without_a_type_is_a_clean_error() {
    let s = TestServer::start().await;
    let got = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "session": "x", "code": "123456" }),
        )
        .await;
    assert_error(&got, 400, "M_MISSING_PARAM");
    let got = s
        .post("/_matrix/client/r0/login", None, json!({ "type": 5 }))
        .await;
    assert_eq!(got.0.as_u16(), 400, "{}", got.1);
}

#[tokio::test]
async fn signing_up_by_sms_tells_those_who_have_the_number_in_their_phone_book() {
    let (s, gw) = with_gateway(|_| {}).await;
    let alice = s.register("alice").await;
    let contacts = "/_matrix/client/unstable/ai.iambig/contacts";
    let (status, body) = s
        .post(
            contacts,
            Some(&alice.token),
            json!({ "contacts": [{ "phone": "+44 7700 900555", "name": "Bob" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["matches"], json!([]), "nobody has the number yet");

    let bob = sign_in(&s, &gw, "+44 7700 900555", "+447700900555").await;

    let synced = crate::common::sync(&s, &alice, "").await;
    let event = synced["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "ai.iambig.contacts")
        .cloned()
        .expect("the arrival is announced");
    assert_eq!(
        event["content"]["matches"][0]["user_id"],
        bob.user_id.as_str()
    );
    let (_, body) = s
        .post(
            contacts,
            Some(&alice.token),
            json!({ "contacts": [{ "phone": "+447700900555" }] }),
        )
        .await;
    assert_eq!(body["matches"][0]["user_id"], bob.user_id.as_str());
}
