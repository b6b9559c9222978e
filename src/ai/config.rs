//! `[ai]`: the LLM endpoint and the bot accounts (see docs/ai.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    /// An OpenAI-compatible API root; `{base_url}/chat/completions` is called.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when not empty.
    pub api_key: String,
    /// The bots. None: no bot runs.
    pub bots: Vec<BotConfig>,
    /// Most messages of the room sent to the model with each question.
    pub context_messages: usize,
    /// Most characters of room history sent to the model (about 4 per token);
    /// older messages are left out first.
    pub context_max_chars: usize,
    /// Shortest time between two edits of a streaming answer.
    pub edit_interval_ms: u64,
    /// How long to wait for the model's response headers or its next chunk.
    pub idle_timeout_ms: u64,
    /// Longest time one answer may take in all.
    pub request_timeout_ms: u64,
    /// `max_tokens` of each completion (unset: the model's default).
    pub max_tokens: Option<u32>,
    /// Answers one bot generates at once; further questions wait their turn.
    pub max_concurrent_per_bot: usize,
    /// Answers one user's questions generate at once (per bot).
    pub max_concurrent_per_user: usize,
    /// Questions a user may ask a bot per minute (a burst of this many, then
    /// refilled evenly).
    pub user_questions_per_minute: u32,
    /// Answer only users of this server, and join only on their invites.
    pub local_users_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// The bot's user id is `@{localpart}:{server_name}`.
    pub localpart: String,
    pub display_name: String,
    /// The model name passed to the API.
    pub model: String,
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
}

fn default_system_prompt() -> String {
    "You are a helpful assistant.".into()
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:11434/v1".into(),
            api_key: String::new(),
            bots: Vec::new(),
            context_messages: 30,
            context_max_chars: 16_000,
            edit_interval_ms: 500,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 300_000,
            max_tokens: None,
            max_concurrent_per_bot: 8,
            max_concurrent_per_user: 2,
            user_questions_per_minute: 10,
            local_users_only: false,
        }
    }
}

impl AiConfig {
    /// The problem with these settings, as (key, what is wrong).
    pub fn problem(&self, server_name: &ruma::ServerName) -> Option<(String, String)> {
        let bad = |key: &str, what: &str| Some((format!("ai.{key}"), what.to_owned()));
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad("base_url", "must be an http:// or https:// URL");
        }
        if self.context_messages == 0 {
            return bad("context_messages", "must be at least 1");
        }
        if self.context_max_chars < 100 {
            return bad("context_max_chars", "must be at least 100");
        }
        if self.edit_interval_ms < 50 {
            return bad("edit_interval_ms", "must be at least 50");
        }
        if self.idle_timeout_ms < 100 || self.request_timeout_ms < 100 {
            return bad(
                "idle_timeout_ms",
                "idle_timeout_ms and request_timeout_ms must be at least 100",
            );
        }
        if self.max_concurrent_per_bot == 0 || self.max_concurrent_per_user == 0 {
            return bad(
                "max_concurrent_per_bot",
                "max_concurrent_per_bot and max_concurrent_per_user must be at least 1",
            );
        }
        if self.user_questions_per_minute == 0 {
            return bad("user_questions_per_minute", "must be at least 1");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, bot) in self.bots.iter().enumerate() {
            let key = format!("bots[{i}]");
            if let Err(e) = crate::auth::check_new_localpart(&bot.localpart, server_name) {
                return bad(&format!("{key}.localpart"), &e.to_string());
            }
            if !seen.insert(bot.localpart.as_str()) {
                return bad(&format!("{key}.localpart"), "is used by another bot");
            }
            if bot.display_name.trim().is_empty() || bot.model.trim().is_empty() {
                return bad(&key, "needs a display_name and a model");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_key() {
        let server: ruma::OwnedServerName = "localhost".try_into().unwrap();
        let bot = BotConfig {
            localpart: "ai".into(),
            display_name: "BIG AI".into(),
            model: "llama3.2".into(),
            system_prompt: default_system_prompt(),
        };
        let mut config = AiConfig {
            bots: vec![bot.clone()],
            ..AiConfig::default()
        };
        assert_eq!(config.problem(&server), None);
        config.bots.push(bot.clone());
        assert_eq!(config.problem(&server).unwrap().0, "ai.bots[1].localpart");
        config.bots[1].localpart = "Bad Name".into();
        assert_eq!(config.problem(&server).unwrap().0, "ai.bots[1].localpart");
        config.bots.pop();
        config.base_url = "localhost:11434".into();
        assert_eq!(config.problem(&server).unwrap().0, "ai.base_url");
    }
}
