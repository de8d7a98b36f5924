//! Provider adapters behind one trait. The gateway works on one OpenAI-shaped request
//! (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` bodies); an adapter turns it
//! into its provider's call (URL, headers, body, signing) and turns the provider's answers
//! (JSON, streams, error bodies) back into OpenAI's shapes, so routing, retries, metering and
//! the inbound Anthropic API never see a provider's own format.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value, json};

use crate::config::{Deployment, Provider};

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

/// A body stream from or to an upstream; an error ends it with a reason.
pub type ByteStream = BoxStream<'static, Result<Bytes, String>>;

/// One call to send upstream.
#[derive(Debug)]
pub struct Outbound {
    /// Full URL.
    pub url: String,
    /// Headers besides `content-type: application/json`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A request the provider cannot take, as a client error (400).
#[derive(Debug)]
pub struct Unsupported(pub String);

/// One provider's translation both ways; see the module docs.
pub trait Adapter: Send + Sync {
    /// The upstream call for `path` (`chat/completions`, `completions`, `embeddings`) of the
    /// OpenAI-shaped `body`, whose `model` is already the deployment's upstream model.
    fn prepare(
        &self,
        d: &Deployment,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<Outbound, Unsupported>;

    /// A successful whole answer to `request` in OpenAI's shape.
    fn answer(
        &self,
        _d: &Deployment,
        _path: &str,
        _request: &Value,
        body: Bytes,
    ) -> Result<Bytes, String> {
        Ok(body)
    }

    /// An upstream error body in OpenAI's error shape (`{"error": {...}}`).
    fn error(&self, _status: StatusCode, body: Bytes) -> Bytes {
        body
    }

    /// Whether a successful answer with this content type is a stream.
    fn is_stream(&self, content_type: &str) -> bool {
        content_type.starts_with("text/event-stream")
    }

    /// A successful stream as OpenAI chat-completion chunks (SSE, usage chunk, `[DONE]`).
    fn stream(&self, _d: &Deployment, upstream: ByteStream) -> ByteStream {
        upstream
    }
}

/// The adapter of a provider.
pub fn of(p: &Provider) -> &'static dyn Adapter {
    match p {
        Provider::OpenAi | Provider::OpenAiCompatible(_) | Provider::Azure => &openai::OpenAi,
        Provider::Anthropic => &anthropic::Anthropic,
        Provider::Gemini => &gemini::Gemini,
        Provider::Bedrock => &bedrock::Bedrock,
    }
}

/// Seconds since the epoch (OpenAI's `created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// OpenAI's error type for an HTTP status.
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// An OpenAI-shaped error body.
pub(crate) fn openai_error(status: StatusCode, message: &str, code: Option<&str>) -> Bytes {
    Bytes::from(
        json!({"error": {"message": message, "type": error_type(status), "param": null,
            "code": code}})
        .to_string(),
    )
}

/// The text of an OpenAI message `content` (a string, or the text of its parts).
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// An image part's data URL split into (media type, base64 data), or `None` for a plain URL.
pub(crate) fn data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media.to_string(), data.to_string()))
}

/// Appends a turn to `out`, merging it into the previous one of the same role (Anthropic,
/// Gemini and Bedrock want user and assistant turns to alternate; several tool results form
/// one user turn). `field` names the turn's list: `content` or Gemini's `parts`.
pub(crate) fn push_turn(out: &mut Vec<Value>, role: &str, field: &str, items: Vec<Value>) {
    if let Some(last) = out.last_mut()
        && last["role"] == role
        && let Some(c) = last[field].as_array_mut()
    {
        c.extend(items);
        return;
    }
    out.push(json!({"role": role, field: items}));
}

/// The URL of an OpenAI `image_url` part (`{"image_url": {"url"}}` or the short form).
pub(crate) fn image_url(part: &Value) -> &str {
    part["image_url"]["url"]
        .as_str()
        .or(part["image_url"].as_str())
        .unwrap_or("")
}

/// The request's output limit: `max_completion_tokens`, else `max_tokens`.
pub(crate) fn max_tokens(body: &Value) -> Option<u64> {
    body["max_completion_tokens"]
        .as_u64()
        .or(body["max_tokens"].as_u64())
}

/// `stop` as a list.
pub(crate) fn stops(body: &Value) -> Option<Vec<String>> {
    match &body["stop"] {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// The JSON schema a `response_format` asks for: `{"type": "object"}` for `json_object`, the
/// schema for `json_schema`, `None` for text or nothing.
pub(crate) fn json_format(body: &Value) -> Option<Value> {
    match body["response_format"]["type"].as_str() {
        Some("json_object") => Some(json!({"type": "object"})),
        Some("json_schema") => Some(
            body["response_format"]["json_schema"]["schema"]
                .as_object()
                .map(|m| Value::Object(m.clone()))
                .unwrap_or(json!({"type": "object"})),
        ),
        _ => None,
    }
}

/// The name of the tool a JSON `response_format` is asked through on providers with no JSON
/// mode of their own (LiteLLM's name, so traces read the same); its arguments come back as the
/// message content.
pub(crate) const JSON_TOOL: &str = "json_tool_call";

/// Refuses `n` > 1 where a provider answers one choice only.
pub(crate) fn one_choice(body: &Value, provider: &str) -> Result<(), Unsupported> {
    match body["n"].as_u64() {
        Some(n) if n > 1 => Err(Unsupported(format!(
            "n={n}: {provider} answers one choice per request; send n separate requests"
        ))),
        _ => Ok(()),
    }
}

/// The (name, description, parameters) of each OpenAI `tools[]` function.
pub(crate) fn functions(body: &Value) -> Vec<(String, Option<String>, Value)> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter(|t| t["type"].as_str().unwrap_or("function") == "function")
                .filter_map(|t| {
                    let f = &t["function"];
                    Some((
                        f["name"].as_str()?.to_string(),
                        f["description"].as_str().map(str::to_string),
                        match &f["parameters"] {
                            Value::Object(m) => Value::Object(m.clone()),
                            _ => json!({"type": "object", "properties": {}}),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// OpenAI's `tool_choice` read as one of auto / none / required / a named function.
pub(crate) enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

pub(crate) fn tool_choice(body: &Value) -> Option<ToolChoice> {
    match &body["tool_choice"] {
        Value::String(s) => match s.as_str() {
            "none" => Some(ToolChoice::None),
            "required" | "any" => Some(ToolChoice::Required),
            _ => Some(ToolChoice::Auto),
        },
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f["name"].as_str())
            .map(|n| ToolChoice::Named(n.to_string())),
        _ => None,
    }
}

/// An OpenAI `usage` object from provider counts; `prompt` includes cached and cache-written
/// tokens (as OpenAI counts them), `cached` and `cache_write` are shown apart.
pub(crate) fn usage(prompt: u64, completion: u64, cached: u64, cache_write: u64) -> Value {
    let mut u = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    });
    if cache_write > 0 {
        u["cache_creation_input_tokens"] = json!(cache_write);
    }
    if cached > 0 {
        u["cache_read_input_tokens"] = json!(cached);
    }
    u
}

/// A chat completion from one assistant message.
pub(crate) struct Completion {
    pub id: String,
    pub model: String,
    pub text: Option<String>,
    pub reasoning: Option<String>,
    /// (id, name, arguments as JSON text).
    pub tool_calls: Vec<(String, String, String)>,
    pub finish: &'static str,
    pub usage: Value,
}

impl Completion {
    /// As OpenAI's `chat.completion` body.
    pub(crate) fn to_json(&self) -> Bytes {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(self.text));
        if let Some(r) = &self.reasoning {
            message.insert("reasoning_content".into(), json!(r));
        }
        if !self.tool_calls.is_empty() {
            message.insert(
                "tool_calls".into(),
                Value::Array(
                    self.tool_calls
                        .iter()
                        .map(|(id, name, args)| {
                            json!({"id": id, "type": "function",
                                "function": {"name": name, "arguments": args}})
                        })
                        .collect(),
                ),
            );
        }
        Bytes::from(
            json!({
                "id": self.id, "object": "chat.completion", "created": unix_now(),
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish,
                    "logprobs": null}],
                "usage": self.usage,
            })
            .to_string(),
        )
    }
}

/// Writes OpenAI chat-completion chunks for a translated stream.
pub(crate) struct Chunks {
    pub id: String,
    pub model: String,
    created: u64,
    started: bool,
}

impl Chunks {
    pub(crate) fn new(model: &str) -> Self {
        Chunks {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_string(),
            created: unix_now(),
            started: false,
        }
    }

    fn event(&self, choices: Value, usage: Option<Value>) -> Vec<u8> {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk",
            "created": self.created, "model": self.model, "choices": choices});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        format!("data: {c}\n\n").into_bytes()
    }

    /// A delta; the first one carries `role: assistant`.
    pub(crate) fn delta(&mut self, out: &mut Vec<u8>, mut delta: Value) {
        if !self.started {
            self.started = true;
            delta["role"] = json!("assistant");
        }
        out.extend(self.event(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            None,
        ));
    }

    /// The last chunk of the choice, its usage chunk and `[DONE]`.
    pub(crate) fn end(&mut self, out: &mut Vec<u8>, finish: &str, usage: Option<Value>) {
        if !self.started {
            self.delta(out, json!({"content": ""}));
        }
        out.extend(self.event(
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
            None,
        ));
        if let Some(u) = usage {
            out.extend(self.event(json!([]), Some(u)));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// An error event (the stream ends after it).
    pub(crate) fn error(&self, out: &mut Vec<u8>, status: StatusCode, message: &str) {
        let e = json!({"error": {"message": message, "type": error_type(status),
            "param": null, "code": null}});
        out.extend(format!("data: {e}\n\n").into_bytes());
    }
}

/// Turns an upstream stream into OpenAI chunks.
pub(crate) trait Translator: Send + 'static {
    /// The chunks for the next bytes (any partial event is held).
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String>;
    /// What the end of the upstream stream adds (the last chunk, usage, `[DONE]`).
    fn finish(&mut self) -> Vec<u8>;
}

/// The stream `upstream` read through `t`.
pub(crate) fn translated(upstream: ByteStream, t: impl Translator) -> ByteStream {
    futures::stream::unfold((Some(upstream), t), |(upstream, mut t)| async move {
        let mut upstream = upstream?;
        loop {
            match upstream.next().await {
                Some(Ok(bytes)) => match t.feed(&bytes) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some((Ok(Bytes::from(out)), (Some(upstream), t))),
                    Err(e) => return Some((Err(e), (None, t))),
                },
                Some(Err(e)) => return Some((Err(e), (None, t))),
                None => {
                    let out = t.finish();
                    return if out.is_empty() {
                        None
                    } else {
                        Some((Ok(Bytes::from(out)), (None, t)))
                    };
                }
            }
        }
    })
    .boxed()
}

/// Splits SSE text into complete events' `(event name, data)`; what is incomplete stays in
/// `buf`.
pub(crate) fn sse_events(buf: &mut Vec<u8>, bytes: &[u8]) -> Vec<(String, String)> {
    buf.extend_from_slice(bytes);
    let mut out = Vec::new();
    loop {
        let find = |sep: &[u8]| buf.windows(sep.len()).position(|w| w == sep);
        let end = [
            find(b"\r\n\r\n").map(|i| (i, 4)),
            find(b"\n\n").map(|i| (i, 2)),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some((i, n)) = end else { break };
        let event = String::from_utf8_lossy(&buf[..i]).into_owned();
        buf.drain(..i + n);
        let mut name = String::new();
        let mut data = Vec::new();
        for line in event.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if !data.is_empty() || !name.is_empty() {
            out.push((name, data.join("\n")));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_hold_partial_events() {
        let mut buf = Vec::new();
        let a = sse_events(&mut buf, b"event: x\ndata: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(a, vec![("x".to_string(), "{\"a\":1}".to_string())]);
        let b = sse_events(&mut buf, b":2}\r\n\r\n");
        assert_eq!(b, vec![(String::new(), "{\"b\":2}".to_string())]);
        assert!(buf.is_empty());
    }

    #[test]
    fn data_urls_split_and_plain_urls_do_not() {
        assert_eq!(
            data_url("data:image/png;base64,iVBOR"),
            Some(("image/png".into(), "iVBOR".into()))
        );
        assert_eq!(data_url("https://x/y.png"), None);
    }

    #[test]
    fn chunks_start_with_the_role_and_end_with_usage_and_done() {
        let mut c = Chunks::new("m");
        let mut out = Vec::new();
        c.delta(&mut out, json!({"content": "hi"}));
        c.end(&mut out, "stop", Some(usage(3, 1, 0, 0)));
        let text = String::from_utf8(out).unwrap_or_default();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4);
        assert!(events[0].contains("\"role\":\"assistant\""));
        assert!(events[1].contains("\"finish_reason\":\"stop\""));
        assert!(events[2].contains("\"total_tokens\":4"));
        assert_eq!(events[3], "data: [DONE]");
    }
}
