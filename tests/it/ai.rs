//! AI bots against a scripted OpenAI-compatible model server on loopback that
//! streams server-sent events and records the requests it gets.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    response::{IntoResponse, Response},
    routing::post,
};
use bigd::ai::BotConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const BOT: &str = "@ai:localhost";
const LIVE: &str = "org.matrix.msc4357.live";
const SYSTEM_PROMPT: &str = "You are the test bot.";

/// How the model answers a question whose text contains a keyword.
#[derive(Clone, Debug)]
enum Script {
    /// Streams these pieces, each after a short pause, then `[DONE]`.
    Chunks(Vec<&'static str>),
    Status(u16),
    /// Sends a valid piece, then a line that is not JSON.
    Garbage,
    /// Sends headers, then nothing.
    Hang,
    /// Waits for `Model::release`, then streams the pieces.
    Gate(Vec<&'static str>),
    /// Ignores `stream: true` and answers with one JSON object.
    Json(&'static str),
}

#[derive(Default)]
struct ModelState {
    scripts: Mutex<Vec<(&'static str, Script)>>,
    requests: Mutex<Vec<(Option<String>, Value)>>,
    gate: tokio::sync::Notify,
}

struct Model {
    url: String,
    state: Arc<ModelState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Model {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Model {
    /// Answers "Hello there!" unless a keyword script matches.
    async fn start(scripts: Vec<(&'static str, Script)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ModelState::default());
        *state.scripts.lock().unwrap() = scripts;
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/v1"),
            state,
            task,
        }
    }

    fn requests(&self) -> Vec<Value> {
        let requests = self.state.requests.lock().unwrap();
        requests.iter().map(|(_, body)| body.clone()).collect()
    }

    fn release(&self) {
        self.state.gate.notify_waiters();
    }
}

fn sse(piece: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({ "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }] })
    )
}

fn stream_of(pieces: Vec<&'static str>, gate: Option<Arc<ModelState>>) -> Body {
    let stream = async_stream(pieces, gate);
    Body::from_stream(stream)
}

fn async_stream(
    pieces: Vec<&'static str>,
    gate: Option<Arc<ModelState>>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::unfold((0usize, pieces, gate), |(i, pieces, gate)| async move {
        if let Some(state) = &gate
            && i == 0
        {
            state.gate.notified().await;
        }
        if i > pieces.len() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let item = if i < pieces.len() {
            sse(pieces[i])
        } else {
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n".to_owned()
        };
        Some((Ok(item), (i + 1, pieces, gate)))
    })
}

async fn complete(
    State(state): State<Arc<ModelState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.requests.lock().unwrap().push((auth, body.clone()));
    let question = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let script = state
        .scripts
        .lock()
        .unwrap()
        .iter()
        .find(|(keyword, _)| question.contains(keyword))
        .map(|(_, script)| script.clone())
        .unwrap_or_else(|| Script::Chunks(vec!["Hel", "lo", " there", "!"]));
    let sse_headers = [("content-type", "text/event-stream")];
    match script {
        Script::Chunks(pieces) => (sse_headers, stream_of(pieces, None)).into_response(),
        Script::Gate(pieces) => {
            (sse_headers, stream_of(pieces, Some(state.clone()))).into_response()
        }
        Script::Status(code) => (
            AxumStatus::from_u16(code).unwrap(),
            "{\"error\":{\"message\":\"the model crashed\"}}",
        )
            .into_response(),
        Script::Garbage => (
            sse_headers,
            format!("{}data: {{this is not json\n\n", sse("Partial")),
        )
            .into_response(),
        Script::Json(text) => axum::Json(json!({
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text },
                          "finish_reason": "stop" }]
        }))
        .into_response(),
        Script::Hang => {
            let never = futures_util::stream::pending::<Result<String, std::io::Error>>();
            (sse_headers, Body::from_stream(never)).into_response()
        }
    }
}

fn bot_config() -> BotConfig {
    BotConfig {
        localpart: "ai".into(),
        display_name: "BIG AI".into(),
        model: "test-model".into(),
        system_prompt: SYSTEM_PROMPT.into(),
    }
}

async fn server_for(model_url: &str, adjust: impl FnOnce(&mut bigd::config::Config)) -> TestServer {
    let url = model_url.to_owned();
    TestServer::start_with(move |c| {
        c.ai.base_url = url;
        c.ai.api_key = "sk-test".into();
        c.ai.bots = vec![bot_config()];
        c.ai.edit_interval_ms = 50;
        c.ai.idle_timeout_ms = 1_000;
        adjust(c);
    })
    .await
}

/// A direct chat of `who` with the bot, once the bot joined.
async fn dm_with_bot(s: &TestServer, who: &Session) -> String {
    let room = s
        .create_room(
            who,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [BOT] }),
        )
        .await;
    wait_for_join(s, who, &room).await;
    room
}

async fn wait_for_join(s: &TestServer, who: &Session, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    for _ in 0..400 {
        let (status, body) = s.get(&path, Some(&who.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["joined"].get(BOT).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the bot did not join {room}");
}

/// The room's messages from the bot, oldest first.
async fn bot_messages(s: &TestServer, who: &Session, room: &str) -> Vec<Value> {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=200"),
            Some(&who.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut events: Vec<Value> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == BOT && e["type"] == "m.room.message")
        .cloned()
        .collect();
    events.reverse();
    events
}

fn replaces(event: &Value) -> Option<&str> {
    let relates = &event["content"]["m.relates_to"];
    (relates["rel_type"] == "m.replace").then(|| relates["event_id"].as_str().unwrap())
}

fn replying_to(event: &Value) -> Option<&str> {
    event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"].as_str()
}

/// What the bot did about a question.
#[derive(Debug)]
enum Outcome {
    /// The final text, the first message and its edits.
    Answer(String, Value, Vec<Value>),
    Notice(String),
}

/// Waits until the bot finished answering `question` (a final edit without
/// the live marker, or a notice); `None` on a bounded timeout.
async fn outcome(s: &TestServer, who: &Session, room: &str, question: &str) -> Option<Outcome> {
    for _ in 0..600 {
        let messages = bot_messages(s, who, room).await;
        let replies: Vec<&Value> = messages
            .iter()
            .filter(|e| replying_to(e) == Some(question))
            .collect();
        let notice = replies
            .iter()
            .find(|e| e["content"]["msgtype"] == "m.notice");
        let first = replies.iter().find(|e| e["content"]["msgtype"] == "m.text");
        if let Some(first) = first {
            let first_id = first["event_id"].as_str().unwrap();
            let edits: Vec<Value> = messages
                .iter()
                .filter(|e| replaces(e) == Some(first_id))
                .cloned()
                .collect();
            if let Some(last) = edits.last()
                && last["content"]["m.new_content"].get(LIVE).is_none()
                && (notice.is_some() || !edits.is_empty())
            {
                let text = last["content"]["m.new_content"]["body"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                return Some(Outcome::Answer(text, (*first).clone(), edits));
            }
        } else if let Some(notice) = notice {
            return Some(Outcome::Notice(
                notice["content"]["body"].as_str().unwrap().to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

async fn answer_of(s: &TestServer, who: &Session, room: &str, question: &str) -> String {
    match outcome(s, who, room, question).await {
        Some(Outcome::Answer(text, ..)) => text,
        other => panic!("expected an answer to {question}, got {other:?}"),
    }
}

async fn notice_of(s: &TestServer, who: &Session, room: &str, question: &str) -> String {
    match outcome(s, who, room, question).await {
        Some(Outcome::Notice(text)) => text,
        other => panic!("expected a notice for {question}, got {other:?}"),
    }
}

fn roles_and_texts(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn send_content(s: &TestServer, who: &Session, room: &str, content: Value) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let txn = format!("ai{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(&who.token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_dm_answer_streams_as_edits_and_the_model_sees_the_conversation() {
    let model = Model::start(vec![]).await;
    let s = server_for(&model.url, |_| {}).await;
    let (status, profile) = s
        .get(&format!("/_matrix/client/v3/profile/{BOT}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["displayname"], "BIG AI");

    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;
    let question = s.send_ok(&alice, &room, "Hello bot").await;
    let Some(Outcome::Answer(text, first, edits)) = outcome(&s, &alice, &room, &question).await
    else {
        panic!("no answer");
    };
    assert_eq!(text, "Hello there!");
    // The bot read the question.
    let body = sync(&s, &alice, "timeout=0").await;
    let receipts = &body["rooms"]["join"][&room]["ephemeral"]["events"];
    assert!(
        receipts
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.receipt"
                && e["content"][&question]["m.read"].get(BOT).is_some()),
        "{receipts}"
    );
    // The first message is a live reply; every edit but the last is live.
    assert!(first["content"].get(LIVE).is_some(), "{first}");
    assert_eq!(
        first["content"]["m.mentions"]["user_ids"],
        json!([alice.user_id])
    );
    let (last, earlier) = edits.split_last().unwrap();
    assert!(last["content"].get(LIVE).is_none(), "{last}");
    for edit in earlier {
        assert!(
            edit["content"]["m.new_content"].get(LIVE).is_some(),
            "{edit}"
        );
    }

    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["model"], "test-model");
    assert_eq!(requests[0]["stream"], true);
    assert_eq!(
        roles_and_texts(&requests[0]),
        vec![
            ("system".into(), SYSTEM_PROMPT.into()),
            ("user".into(), "Hello bot".into())
        ]
    );
    let auth = model.state.requests.lock().unwrap()[0].0.clone();
    assert_eq!(auth.as_deref(), Some("Bearer sk-test"));

    // A redacted message is left out, an edited one is sent as edited, the
    // bot's answers are assistant turns.
    let secret = s.send_ok(&alice, &room, "my secret").await;
    answer_of(&s, &alice, &room, &secret).await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{secret}/r1"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let typo = s.send_ok(&alice, &room, "with a tpyo").await;
    answer_of(&s, &alice, &room, &typo).await;
    send_content(
        &s,
        &alice,
        &room,
        json!({
            "msgtype": "m.text", "body": "* with a typo",
            "m.new_content": { "msgtype": "m.text", "body": "with a typo" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": typo },
        }),
    )
    .await;
    let last_question = s.send_ok(&alice, &room, "And now?").await;
    answer_of(&s, &alice, &room, &last_question).await;
    let requests = model.requests();
    // The edit itself was not a question.
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert_eq!(
        roles_and_texts(&requests[3]),
        vec![
            ("system".into(), SYSTEM_PROMPT.into()),
            ("user".into(), "Hello bot".into()),
            ("assistant".into(), "Hello there!".into()),
            ("assistant".into(), "Hello there!".into()),
            ("user".into(), "with a typo".into()),
            ("assistant".into(), "Hello there!".into()),
            ("user".into(), "And now?".into()),
        ]
    );

    // Alice was notified of the bot's answers, never of its edits.
    let (status, body) = s
        .get("/_matrix/client/v3/notifications", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let notified = body["notifications"].as_array().unwrap();
    assert!(
        notified.iter().any(|n| n["event"]["sender"] == BOT),
        "{body}"
    );
    assert!(
        notified.iter().all(|n| replaces(&n["event"]).is_none()),
        "{body}"
    );
}

#[tokio::test]
async fn in_a_group_the_bot_answers_mentions_and_replies_only() {
    let model = Model::start(vec![]).await;
    let s = server_for(&model.url, |_| {}).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    s.join(&bob, &room).await;
    let (status, body) = s.invite(&alice, &room, BOT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_join(&s, &alice, &room).await;

    s.send_ok(&bob, &room, "hi all, nothing for the bot").await;
    let mention = send_content(
        &s,
        &alice,
        &room,
        json!({ "msgtype": "m.text", "body": "what is 2+2?", "m.mentions": { "user_ids": [BOT] } }),
    )
    .await;
    let answer = answer_of(&s, &alice, &room, &mention).await;
    assert_eq!(answer, "Hello there!");
    let requests = model.requests();
    assert_eq!(requests.len(), 1, "only the mention was a question");
    assert_eq!(
        roles_and_texts(&requests[0]),
        vec![
            ("system".into(), SYSTEM_PROMPT.into()),
            ("user".into(), "bob: hi all, nothing for the bot".into()),
            ("user".into(), "alice: what is 2+2?".into()),
        ]
    );

    // A reply to the bot's answer, and its name in the text, are questions too.
    let bots = bot_messages(&s, &alice, &room).await;
    let answer_id = bots[0]["event_id"].as_str().unwrap();
    let reply = send_content(
        &s,
        &bob,
        &room,
        json!({ "msgtype": "m.text", "body": "are you sure?",
                "m.relates_to": { "m.in_reply_to": { "event_id": answer_id } } }),
    )
    .await;
    answer_of(&s, &bob, &room, &reply).await;
    let by_name = s.send_ok(&bob, &room, "Big AI, say hi").await;
    answer_of(&s, &bob, &room, &by_name).await;
    assert_eq!(model.requests().len(), 3);
}

#[tokio::test]
async fn model_failures_become_notices_and_the_next_question_works() {
    let model = Model::start(vec![
        ("crash", Script::Status(500)),
        ("garbage", Script::Garbage),
        ("hang", Script::Hang),
    ])
    .await;
    let s = server_for(&model.url, |_| {}).await;
    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;

    for keyword in ["crash", "hang"] {
        let question = s.send_ok(&alice, &room, &format!("please {keyword}")).await;
        let notice = notice_of(&s, &alice, &room, &question).await;
        assert!(notice.contains("could not answer"), "{notice}");
        let next = s.send_ok(&alice, &room, "are you back?").await;
        assert_eq!(answer_of(&s, &alice, &room, &next).await, "Hello there!");
    }

    // Garbage after a first piece: the partial answer is closed and a notice follows.
    let question = s.send_ok(&alice, &room, "garbage please").await;
    for _ in 0..400 {
        let messages = bot_messages(&s, &alice, &room).await;
        let notice = messages
            .iter()
            .any(|e| replying_to(e) == Some(&question) && e["content"]["msgtype"] == "m.notice");
        if notice {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let messages = bot_messages(&s, &alice, &room).await;
    let first = messages
        .iter()
        .find(|e| replying_to(e) == Some(&question) && e["content"]["msgtype"] == "m.text")
        .expect("the partial answer");
    let edits: Vec<&Value> = messages
        .iter()
        .filter(|e| replaces(e) == first["event_id"].as_str())
        .collect();
    let last = edits.last().expect("a final edit");
    assert_eq!(last["content"]["m.new_content"]["body"], "Partial");
    assert!(last["content"].get(LIVE).is_none());
    let next = s.send_ok(&alice, &room, "and now?").await;
    assert_eq!(answer_of(&s, &alice, &room, &next).await, "Hello there!");
}

#[tokio::test]
async fn a_server_that_does_not_stream_is_understood() {
    let model = Model::start(vec![("json", Script::Json("All at once"))]).await;
    let s = server_for(&model.url, |c| c.ai.local_users_only = true).await;
    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;
    let question = s.send_ok(&alice, &room, "json please").await;
    assert_eq!(answer_of(&s, &alice, &room, &question).await, "All at once");
}

#[tokio::test]
async fn an_unreachable_model_gets_a_notice() {
    // A port nothing listens on: bind one, then free it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let s = server_for(&url, |_| {}).await;
    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;
    let question = s.send_ok(&alice, &room, "anyone there?").await;
    let notice = notice_of(&s, &alice, &room, &question).await;
    assert!(notice.contains("could not answer"), "{notice}");
}

#[tokio::test]
async fn a_slow_answer_does_not_hold_up_other_rooms() {
    let model = Model::start(vec![("slow", Script::Gate(vec!["At ", "last"]))]).await;
    let s = server_for(&model.url, |_| {}).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let slow_room = dm_with_bot(&s, &alice).await;
    let quick_room = dm_with_bot(&s, &bob).await;

    let slow = s.send_ok(&alice, &slow_room, "a slow one").await;
    // The model got the slow question before the quick one is asked.
    for _ in 0..400 {
        if !model.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The bot shows it is typing while it waits for the model.
    let body = sync(&s, &alice, "timeout=0").await;
    let typing = &body["rooms"]["join"][&slow_room]["ephemeral"]["events"];
    assert!(
        typing
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!([BOT])),
        "{typing}"
    );
    let quick = s.send_ok(&bob, &quick_room, "a quick one").await;
    assert_eq!(
        answer_of(&s, &bob, &quick_room, &quick).await,
        "Hello there!"
    );
    assert!(
        bot_messages(&s, &alice, &slow_room).await.is_empty(),
        "the slow answer is still waiting"
    );
    model.release();
    assert_eq!(answer_of(&s, &alice, &slow_room, &slow).await, "At last");
}

#[tokio::test]
async fn twenty_rooms_asking_at_once_are_all_answered() {
    let model = Model::start(vec![]).await;
    let s = server_for(&model.url, |c| {
        c.ai.user_questions_per_minute = 100;
        c.ai.max_concurrent_per_user = 4;
    })
    .await;
    let alice = s.register("alice").await;
    let mut rooms = Vec::new();
    for _ in 0..20 {
        rooms.push(dm_with_bot(&s, &alice).await);
    }
    let sends = rooms.iter().map(|room| s.send_ok(&alice, room, "hi"));
    let questions = futures_util::future::join_all(sends).await;
    for (room, question) in rooms.iter().zip(&questions) {
        assert_eq!(answer_of(&s, &alice, room, question).await, "Hello there!");
    }
    assert_eq!(model.requests().len(), 20);
}

#[tokio::test]
async fn in_an_encrypted_room_the_bot_explains_once() {
    let model = Model::start(vec![]).await;
    let s = server_for(&model.url, |_| {}).await;
    let alice = s.register("alice").await;
    let encryption = json!([{ "type": "m.room.encryption", "state_key": "",
                              "content": { "algorithm": "m.megolm.v1.aes-sha2" } }]);
    // A room created with the bot invited is created unencrypted.
    let dm = s
        .create_room(
            &alice,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [BOT],
                    "initial_state": encryption }),
        )
        .await;
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{dm}/state/m.room.encryption/"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // One encrypted before the bot was invited stays encrypted.
    let room = s
        .create_room(
            &alice,
            json!({ "preset": "trusted_private_chat", "initial_state": encryption }),
        )
        .await;
    let (status, body) = s.invite(&alice, &room, BOT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_join(&s, &alice, &room).await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/e1"),
            Some(&alice.token),
            json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA",
                    "sender_key": "x", "session_id": "y", "device_id": "D" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.send_ok(&alice, &room, "plain text in an encrypted room")
        .await;

    // A question in the unencrypted room, answered after the bot read this one.
    wait_for_join(&s, &alice, &dm).await;
    let question = s.send_ok(&alice, &dm, "hi").await;
    answer_of(&s, &alice, &dm, &question).await;
    let notices: Vec<Value> = bot_messages(&s, &alice, &room).await;
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert_eq!(notices[0]["content"]["msgtype"], "m.notice");
    assert!(
        notices[0]["content"]["body"]
            .as_str()
            .unwrap()
            .contains("encrypted")
    );
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn a_user_asking_too_fast_is_told_to_wait() {
    let model = Model::start(vec![]).await;
    let s = server_for(&model.url, |c| c.ai.user_questions_per_minute = 1).await;
    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;
    let first = s.send_ok(&alice, &room, "one").await;
    answer_of(&s, &alice, &room, &first).await;
    let second = s.send_ok(&alice, &room, "two").await;
    let notice = notice_of(&s, &alice, &room, &second).await;
    assert!(notice.contains("faster"), "{notice}");
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn without_bots_nothing_runs_and_the_display_name_follows_the_config() {
    let s = TestServer::start().await;
    let (status, _) = s
        .get(&format!("/_matrix/client/v3/profile/{BOT}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(s);

    let model = Model::start(vec![]).await;
    let mut s = server_for(&model.url, |_| {}).await;
    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;
    s.restart_with(|c| c.ai.bots[0].display_name = "Renamed AI".into())
        .await;
    let (_, profile) = s
        .get(&format!("/_matrix/client/v3/profile/{BOT}"), None)
        .await;
    assert_eq!(profile["displayname"], "Renamed AI");
    let (status, member) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{BOT}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["displayname"], "Renamed AI");
}

#[tokio::test]
async fn the_bot_leaves_when_everyone_else_left() {
    let model = Model::start(vec![]).await;
    let s = server_for(&model.url, |_| {}).await;
    let alice = s.register("alice").await;
    let room = dm_with_bot(&s, &alice).await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let bot = ruma::UserId::parse(BOT).unwrap();
    for _ in 0..400 {
        let membership = s.services().rooms.membership(&room_id, &bot).unwrap();
        if membership.as_deref() == Some("leave") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the bot stayed alone in {room}");
}
