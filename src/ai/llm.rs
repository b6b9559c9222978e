//! The LLM client: OpenAI-compatible `POST {base_url}/chat/completions` with
//! `stream: true`, read as server-sent events (`data: {json}` lines, ending
//! with `data: [DONE]`). OpenAI, Ollama, llama.cpp server and vLLM speak it.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// One turn of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug)]
pub struct Llm {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    idle_timeout: Duration,
    max_tokens: Option<u32>,
}

/// Why an answer failed, for the log (users get a short notice).
#[derive(Debug)]
pub enum LlmError {
    Unreachable(String),
    Status(u16, String),
    Timeout,
    Malformed(String),
    Upstream(String),
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "the model server is unreachable: {e}"),
            Self::Status(status, body) => write!(f, "the model server answered {status}: {body}"),
            Self::Timeout => write!(f, "the model server did not answer in time"),
            Self::Malformed(e) => write!(f, "the model server sent a malformed stream: {e}"),
            Self::Upstream(e) => write!(f, "the model server reported an error: {e}"),
        }
    }
}

impl Llm {
    pub fn new(config: &super::AiConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.idle_timeout_ms))
            .user_agent(concat!("bigd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("LLM HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            api_key: Some(config.api_key.clone()).filter(|k| !k.is_empty()),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            max_tokens: config.max_tokens,
        })
    }

    /// Starts a streamed completion; pull the text with `Completion::next`.
    pub async fn stream(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> std::result::Result<Completion, LlmError> {
        let mut body = json!({ "model": model, "messages": messages, "stream": true });
        if let Some(max) = self.max_tokens {
            body["max_tokens"] = json!(max);
        }
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(self.idle_timeout, request.send())
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(|e| LlmError::Unreachable(e.to_string()))?;
        let status = response.status();
        let json_body = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let mut completion = Completion {
            response,
            idle_timeout: self.idle_timeout,
            parser: SseParser::default(),
            pending: std::collections::VecDeque::new(),
            finished: false,
        };
        if !status.is_success() {
            let body = completion.read_all().await.unwrap_or_default();
            return Err(LlmError::Status(status.as_u16(), snippet(&body)));
        }
        // A server that ignores `stream: true` answers with one JSON object.
        if json_body {
            let body = completion.read_all().await?;
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| LlmError::Malformed(format!("response is not JSON: {e}")))?;
            let text = value["choices"][0]["message"]["content"]
                .as_str()
                .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
            completion.pending.push_back(text.to_owned());
            completion.finished = true;
        }
        Ok(completion)
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

/// A completion being streamed.
#[derive(Debug)]
pub struct Completion {
    response: reqwest::Response,
    idle_timeout: Duration,
    parser: SseParser,
    pending: std::collections::VecDeque<String>,
    finished: bool,
}

impl Completion {
    async fn chunk(&mut self) -> std::result::Result<Option<bytes::Bytes>, LlmError> {
        tokio::time::timeout(self.idle_timeout, self.response.chunk())
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(|e| LlmError::Unreachable(e.to_string()))
    }

    async fn read_all(&mut self) -> std::result::Result<Vec<u8>, LlmError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > 4 * 1024 * 1024 {
                return Err(LlmError::Malformed("response larger than 4 MiB".into()));
            }
        }
        Ok(body)
    }

    /// The next piece of text; `None` once the model is done.
    pub async fn next(&mut self) -> std::result::Result<Option<String>, LlmError> {
        loop {
            if let Some(text) = self.pending.pop_front() {
                return Ok(Some(text));
            }
            if self.finished {
                return Ok(None);
            }
            if let Some(e) = self.parser.error.take() {
                return Err(e);
            }
            let Some(chunk) = self.chunk().await? else {
                // The stream closed without `[DONE]`: complete only if the
                // model said why it stopped.
                if self.parser.finish_reason_seen {
                    self.finished = true;
                    continue;
                }
                return Err(LlmError::Malformed("the stream ended before [DONE]".into()));
            };
            for event in self.parser.push(&chunk)? {
                match event {
                    SseEvent::Text(text) => self.pending.push_back(text),
                    SseEvent::Done => self.finished = true,
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    Text(String),
    Done,
}

/// Splits an SSE byte stream into completion events.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    done: bool,
    /// An error found after some text, reported on the next call.
    error: Option<LlmError>,
    pub finish_reason_seen: bool,
}

/// A line longer than this is not a completion chunk.
const MAX_LINE: usize = 1024 * 1024;

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> std::result::Result<Vec<SseEvent>, LlmError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            if self.done {
                continue;
            }
            let line = std::str::from_utf8(&line)
                .map_err(|_| LlmError::Malformed("a line is not UTF-8".into()))?
                .trim_end_matches(['\r', '\n']);
            let event = match self.line(line) {
                Ok(event) => event,
                // The text before a bad line still counts; the error comes next.
                Err(e) if !events.is_empty() => {
                    self.error = Some(e);
                    self.done = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            if let Some(event) = event {
                if event == SseEvent::Done {
                    self.done = true;
                }
                events.push(event);
            }
        }
        if self.buffer.len() > MAX_LINE {
            return Err(LlmError::Malformed("a line is longer than 1 MiB".into()));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> std::result::Result<Option<SseEvent>, LlmError> {
        // Blank lines end an event; `:` lines are comments (keep-alives);
        // `event:`, `id:` and `retry:` carry nothing a completion needs.
        let Some(data) = line.strip_prefix("data:") else {
            if line.is_empty()
                || line.starts_with(':')
                || line.starts_with("event:")
                || line.starts_with("id:")
                || line.starts_with("retry:")
            {
                return Ok(None);
            }
            return Err(LlmError::Malformed(format!(
                "unexpected line {:?}",
                snippet(line.as_bytes())
            )));
        };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Some(SseEvent::Done));
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|e| LlmError::Malformed(format!("a data line is not JSON: {e}")))?;
        if let Some(error) = value.get("error") {
            let message = error["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(LlmError::Upstream(snippet(message.as_bytes())));
        }
        let choice = value
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let Some(choice) = choice else {
            // Usage-only chunks (`stream_options.include_usage`) have no choices.
            return if value.get("choices").is_some() || value.get("usage").is_some() {
                Ok(None)
            } else {
                Err(LlmError::Malformed("a chunk has no choices".into()))
            };
        };
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            self.finish_reason_seen = true;
        }
        match choice["delta"]["content"].as_str() {
            Some(text) if !text.is_empty() => Ok(Some(SseEvent::Text(text.to_owned()))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunks_split_anywhere() {
        let stream = concat!(
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo ü\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        for split in [1, 3, 7, 1000] {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for piece in stream.as_bytes().chunks(split) {
                events.extend(parser.push(piece).unwrap());
            }
            assert_eq!(
                events,
                vec![
                    SseEvent::Text("Hel".into()),
                    SseEvent::Text("lo ü".into()),
                    SseEvent::Done
                ]
            );
            assert!(parser.finish_reason_seen);
        }
    }

    #[test]
    fn text_before_a_bad_line_is_kept() {
        let mut parser = SseParser::default();
        let events = parser
            .push(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ngarbage\n")
            .unwrap();
        assert_eq!(events, vec![SseEvent::Text("Hi".into())]);
        assert!(matches!(parser.push(b""), Err(LlmError::Malformed(_))));
    }

    #[test]
    fn garbage_and_errors_are_reported() {
        let mut parser = SseParser::default();
        assert!(matches!(
            parser.push(b"data: {not json\n"),
            Err(LlmError::Malformed(_))
        ));
        let mut parser = SseParser::default();
        assert!(matches!(
            parser.push(b"<html>oops</html>\n"),
            Err(LlmError::Malformed(_))
        ));
        let mut parser = SseParser::default();
        assert!(matches!(
            parser.push(b"data: {\"error\":{\"message\":\"model not found\"}}\n"),
            Err(LlmError::Upstream(m)) if m == "model not found"
        ));
        let mut parser = SseParser::default();
        assert!(matches!(
            parser.push(&[b'x'; MAX_LINE + 1]),
            Err(LlmError::Malformed(_))
        ));
    }
}
