//! What the model is shown: the system prompt and the room's recent messages,
//! edits applied, redacted messages, notices and media left out, the bot's own
//! answers as `assistant` turns.

use std::collections::HashMap;

use ruma::{OwnedEventId, OwnedUserId, UserId};
use serde_json::Value;

use super::llm::ChatMessage;

/// A message event of the room, oldest first.
#[derive(Debug, Clone)]
pub struct TimelineMessage {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    pub content: Value,
    pub redacted: bool,
}

/// The edit an event makes (`m.replace`), as (target, new content).
fn replacement(content: &Value) -> Option<(&str, &Value)> {
    let relates = content.get("m.relates_to")?;
    if relates.get("rel_type")?.as_str()? != "m.replace" {
        return None;
    }
    Some((
        relates.get("event_id")?.as_str()?,
        content.get("m.new_content")?,
    ))
}

/// Whether an event edits another.
pub fn is_edit(content: &Value) -> bool {
    content
        .get("m.relates_to")
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str)
        == Some("m.replace")
}

/// Text a person typed (`m.text`, `m.emote`): what the bot reads and answers.
/// Notices (bots' output) and media are not.
pub fn is_text(content: &Value) -> bool {
    matches!(
        content.get("msgtype").and_then(Value::as_str),
        Some("m.text" | "m.emote")
    )
}

/// The body without a reply fallback (the quoted lines some clients prepend).
pub fn body_of(content: &Value) -> Option<String> {
    let body = content.get("body")?.as_str()?;
    let is_reply = content
        .get("m.relates_to")
        .and_then(|r| r.get("m.in_reply_to"))
        .is_some();
    let body = if is_reply && body.starts_with("> ") {
        let mut lines = body.lines().skip_while(|l| l.starts_with('>'));
        let rest: Vec<&str> = lines.by_ref().collect();
        rest.join("\n")
    } else {
        body.to_owned()
    };
    let body = body.trim();
    (!body.is_empty()).then(|| body.to_owned())
}

/// Builds the request's messages. `name` gives a sender's display name (used
/// in group rooms, so the model knows who says what).
pub fn build(
    system_prompt: &str,
    bot: &UserId,
    group: bool,
    history: &[TimelineMessage],
    max_messages: usize,
    max_chars: usize,
    name: &dyn Fn(&UserId) -> String,
) -> Vec<ChatMessage> {
    // The latest edit by the original sender wins.
    let mut edits: HashMap<&str, (&UserId, &Value)> = HashMap::new();
    for message in history {
        if message.redacted {
            continue;
        }
        if let Some((target, new_content)) = replacement(&message.content) {
            edits.insert(target, (&message.sender, new_content));
        }
    }
    let mut turns = Vec::new();
    let mut chars = 0;
    for message in history.iter().rev() {
        if turns.len() == max_messages {
            break;
        }
        if message.redacted || is_edit(&message.content) {
            continue;
        }
        let content = match edits.get(message.event_id.as_str()) {
            Some((editor, new_content)) if *editor == message.sender => *new_content,
            _ => &message.content,
        };
        if !is_text(content) {
            continue;
        }
        let Some(body) = body_of(content) else {
            continue;
        };
        let from_bot = message.sender == bot;
        let text = if group && !from_bot {
            format!("{}: {body}", name(&message.sender))
        } else {
            body
        };
        chars += text.chars().count();
        // The newest message (the question) is always sent.
        if chars > max_chars && !turns.is_empty() {
            break;
        }
        let text = if chars > max_chars {
            text.chars().take(max_chars).collect()
        } else {
            text
        };
        let role = if from_bot { "assistant" } else { "user" };
        turns.push(ChatMessage {
            role,
            content: text,
        });
    }
    let mut messages = Vec::with_capacity(turns.len() + 1);
    messages.push(ChatMessage {
        role: "system",
        content: system_prompt.to_owned(),
    });
    messages.extend(turns.into_iter().rev());
    messages
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn msg(id: &str, sender: &str, content: Value) -> TimelineMessage {
        TimelineMessage {
            event_id: OwnedEventId::try_from(format!("${id}")).unwrap(),
            sender: OwnedUserId::try_from(format!("@{sender}:localhost")).unwrap(),
            content,
            redacted: false,
        }
    }

    #[test]
    fn applies_edits_skips_redactions_and_notices_and_limits() {
        let bot = OwnedUserId::try_from("@ai:localhost").unwrap();
        let mut gone = msg("b", "alice", json!({"msgtype": "m.text", "body": "secret"}));
        gone.redacted = true;
        let history = vec![
            msg("a", "alice", json!({"msgtype": "m.text", "body": "first"})),
            gone,
            msg("c", "ai", json!({"msgtype": "m.text", "body": "par"})),
            msg(
                "d",
                "ai",
                json!({"msgtype": "m.text", "body": "* partial",
                       "m.new_content": {"msgtype": "m.text", "body": "full answer"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": "$c"}}),
            ),
            msg(
                "e",
                "bob",
                json!({"msgtype": "m.text", "body": "* hijack",
                       "m.new_content": {"msgtype": "m.text", "body": "hijacked"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": "$a"}}),
            ),
            msg(
                "f",
                "ai",
                json!({"msgtype": "m.notice", "body": "could not answer"}),
            ),
            msg(
                "g",
                "alice",
                json!({"msgtype": "m.text", "body": "> <@ai:localhost> full answer\n\nthanks",
                       "m.relates_to": {"m.in_reply_to": {"event_id": "$c"}}}),
            ),
        ];
        let name = |u: &UserId| u.localpart().to_owned();
        let got = build("be nice", &bot, false, &history, 10, 1000, &name);
        let got: Vec<(&str, &str)> = got.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("system", "be nice"),
                ("user", "first"),
                ("assistant", "full answer"),
                ("user", "thanks"),
            ]
        );
        let got = build("p", &bot, true, &history, 2, 1000, &name);
        let got: Vec<(&str, &str)> = got.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("system", "p"),
                ("assistant", "full answer"),
                ("user", "alice: thanks")
            ]
        );
        let got = build("p", &bot, false, &history, 10, 5, &name);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].content, "thank");
    }
}
