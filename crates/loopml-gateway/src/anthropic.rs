//! Inbound Anthropic Messages (`POST /v1/messages`), so the Anthropic SDK works against the
//! gateway: the request is translated into the OpenAI chat request the rest of the gateway
//! routes (system prompt, text and image blocks, tools and tool results, stop sequences), and
//! the answer back into a Messages response — JSON, or Anthropic's SSE events (`message_start`,
//! `content_block_*`, `message_delta` with usage, `message_stop`) for a stream. Errors are in
//! Anthropic's shape (`{"type": "error", "error": {type, message}}`). Streamed tool calls are
//! not translated yet (their text is); non-streamed ones are.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::proxy::Gateway;

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
    )
        .into_response()
}

/// Text of a `system` field: a string or a list of text blocks.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The OpenAI chat request for a Messages request.
fn to_openai(req: &Value) -> Result<Value, String> {
    let model = req["model"].as_str().ok_or("\"model\" is required")?;
    let max_tokens = req["max_tokens"]
        .as_u64()
        .ok_or("\"max_tokens\" is required")?;
    let mut messages = Vec::new();
    if !req["system"].is_null() {
        messages.push(json!({"role": "system", "content": text_of(&req["system"])}));
    }
    for m in req["messages"]
        .as_array()
        .ok_or("\"messages\" must be a list")?
    {
        let role = m["role"].as_str().ok_or("every message needs a role")?;
        match &m["content"] {
            Value::String(s) => messages.push(json!({"role": role, "content": s})),
            Value::Array(blocks) => {
                let mut parts = Vec::new();
                let mut tool_calls = Vec::new();
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                        Some("image") => {
                            let src = &b["source"];
                            let url = match src["type"].as_str() {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    src["media_type"].as_str().unwrap_or("image/png"),
                                    src["data"].as_str().unwrap_or("")
                                ),
                                _ => src["url"].as_str().unwrap_or("").to_string(),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        Some("tool_use") => tool_calls.push(json!({
                            "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": b["input"].to_string()},
                        })),
                        Some("tool_result") => messages.push(json!({
                            "role": "tool", "tool_call_id": b["tool_use_id"],
                            "content": text_of(&b["content"]),
                        })),
                        other => {
                            return Err(format!("content block type {other:?} is not supported"));
                        }
                    }
                }
                if !parts.is_empty() || !tool_calls.is_empty() {
                    let mut msg = json!({"role": role});
                    let only_text = parts.iter().all(|p| p["type"] == "text");
                    msg["content"] = if parts.is_empty() {
                        Value::Null
                    } else if only_text {
                        json!(
                            parts
                                .iter()
                                .filter_map(|p| p["text"].as_str())
                                .collect::<Vec<_>>()
                                .join("\n")
                        )
                    } else {
                        json!(parts)
                    };
                    if !tool_calls.is_empty() {
                        msg["tool_calls"] = json!(tool_calls);
                    }
                    messages.push(msg);
                }
            }
            _ => return Err("message content must be text or a list of blocks".into()),
        }
    }
    let mut out = json!({"model": model, "messages": messages, "max_tokens": max_tokens});
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stream", "stream"),
    ] {
        if !req[from].is_null() {
            out[to] = req[from].clone();
        }
    }
    if let Some(stop) = req["stop_sequences"].as_array() {
        out["stop"] = json!(stop);
    }
    if let Some(tools) = req["tools"].as_array() {
        out["tools"] = json!(tools
            .iter()
            .map(|t| json!({"type": "function", "function": {
                "name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}))
            .collect::<Vec<_>>());
    }
    match req["tool_choice"]["type"].as_str() {
        Some("auto") => out["tool_choice"] = json!("auto"),
        Some("any") => out["tool_choice"] = json!("required"),
        Some("none") => out["tool_choice"] = json!("none"),
        Some("tool") => {
            out["tool_choice"] =
                json!({"type": "function", "function": {"name": req["tool_choice"]["name"]}});
        }
        _ => {}
    }
    Ok(out)
}

fn stop_reason(finish: Option<&str>) -> Value {
    match finish {
        Some("length") => json!("max_tokens"),
        Some("tool_calls") | Some("function_call") => json!("tool_use"),
        Some("content_filter") => json!("refusal"),
        Some(_) => json!("end_turn"),
        None => Value::Null,
    }
}

/// The Messages response for an OpenAI chat completion.
fn to_anthropic(done: &Value) -> Value {
    let choice = &done["choices"][0];
    let mut content = Vec::new();
    if let Some(t) = choice["message"]["content"]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let input: Value = c["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    json!({
        "id": format!("msg_{}", done["id"].as_str().unwrap_or("")),
        "type": "message",
        "role": "assistant",
        "model": done["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()),
        "stop_sequence": null,
        "usage": anthropic_usage(&done["usage"]),
    })
}

fn event(kind: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The block a translated stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
enum Open {
    #[default]
    None,
    Text,
    /// A tool call: its OpenAI `tool_calls[].index`.
    Tool(u64),
}

/// Turns an OpenAI SSE stream into Anthropic's events, line by line as chunks arrive: text
/// and each tool call become their own content blocks, in order.
#[derive(Default)]
struct Translate {
    buf: String,
    started: bool,
    open: Open,
    /// The index the next content block gets.
    next_block: u64,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
}

/// Anthropic's usage for OpenAI's: `input_tokens` leaves out cache reads and writes.
fn anthropic_usage(u: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let prompt = n(&u["prompt_tokens"]);
    let read = n(&u["prompt_tokens_details"]["cached_tokens"]);
    let write = n(&u["cache_creation_input_tokens"]);
    json!({
        "input_tokens": prompt.saturating_sub(read + write),
        "output_tokens": n(&u["completion_tokens"]),
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    })
}

impl Translate {
    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open != Open::None {
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_block - 1}),
            ));
            self.open = Open::None;
        }
    }

    fn open(&mut self, out: &mut Vec<Bytes>, kind: Open, block: Value) {
        self.close(out);
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_block,
                "content_block": block}),
        ));
        self.next_block += 1;
        self.open = kind;
    }

    fn feed(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buf.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find('\n') {
            let line = self.buf[..end].trim_end_matches('\r').to_string();
            self.buf.drain(..=end);
            let Some(data) = line
                .strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
            else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                out.extend(self.finish());
                continue;
            }
            let Ok(c) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(e) = c["error"].as_object() {
                out.push(event(
                    "error",
                    json!({"type": "error", "error": {"type": "api_error",
                        "message": e.get("message").cloned().unwrap_or(json!("upstream error"))}}),
                ));
                self.done = true;
                continue;
            }
            if !self.started {
                self.started = true;
                out.push(event(
                    "message_start",
                    json!({"type": "message_start", "message": {
                    "id": format!("msg_{}", c["id"].as_str().unwrap_or("")), "type": "message",
                    "role": "assistant", "model": c["model"], "content": [], "stop_reason": null,
                    "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
                ));
            }
            if c["usage"].is_object() {
                self.usage = Some(c["usage"].clone());
            }
            let delta = &c["choices"][0]["delta"];
            if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                if self.open != Open::Text {
                    self.open(&mut out, Open::Text, json!({"type": "text", "text": ""}));
                }
                out.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": self.next_block - 1,
                        "delta": {"type": "text_delta", "text": t}}),
                ));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = call["index"].as_u64().unwrap_or(0);
                if self.open != Open::Tool(i) {
                    let id = call["id"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::new_v4().simple()));
                    self.open(
                        &mut out,
                        Open::Tool(i),
                        json!({"type": "tool_use", "id": id,
                            "name": call["function"]["name"], "input": {}}),
                    );
                }
                if let Some(a) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    out.push(event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": self.next_block - 1,
                            "delta": {"type": "input_json_delta", "partial_json": a}}),
                    ));
                }
            }
            if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
                self.finish = Some(f.to_string());
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        self.close(&mut out);
        let usage = self
            .usage
            .as_ref()
            .map(anthropic_usage)
            .unwrap_or_else(|| json!({"input_tokens": 0, "output_tokens": 0}));
        out.push(event(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
            "usage": usage}),
        ));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        out
    }
}

/// `POST /v1/messages`.
pub async fn messages(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let openai = match to_openai(&req) {
        Ok(o) => o,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
    };
    let stream = openai["stream"].as_bool().unwrap_or(false);
    let mut openai = openai;
    if stream {
        // The translator needs the usage chunk for `message_delta`'s token counts.
        openai["stream_options"] = json!({"include_usage": true});
    }
    let resp = match g.call_json("chat/completions", headers, openai).await {
        Ok(r) => r,
        Err(e) => {
            let extra: Vec<(&'static str, String)> = e.header_list().to_vec();
            let (status, message) = e.parts();
            let kind = match status.as_u16() {
                401 => "authentication_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                400 => "invalid_request_error",
                _ => "api_error",
            };
            let mut r = error(status, kind, message);
            for (k, v) in extra {
                if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                    r.headers_mut().insert(k, v);
                }
            }
            return r;
        }
    };
    let status = resp.status();
    let is_stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut keep = HeaderMap::new();
    for (k, v) in resp.headers() {
        if k.as_str().starts_with("x-loopml-") || k == header::RETRY_AFTER {
            keep.insert(k.clone(), v.clone());
        }
    }
    if !status.is_success() {
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap_or_default();
        let upstream: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = upstream["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        let mut r = error(
            status,
            if status.as_u16() == 429 {
                "rate_limit_error"
            } else {
                "api_error"
            },
            message,
        );
        r.headers_mut().extend(keep);
        return r;
    }
    let mut out = if stream && is_stream {
        let mut t = Translate::default();
        let events = resp.into_body().into_data_stream().flat_map(move |chunk| {
            let items: Vec<Result<Bytes, std::io::Error>> = match chunk {
                Ok(c) => t.feed(&c).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(std::io::Error::other(e))],
            };
            futures::stream::iter(items)
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(events))
            .unwrap_or_default()
    } else {
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(done) => axum::Json(to_anthropic(&done)).into_response(),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                format!("the upstream answer is not JSON: {e}"),
            ),
        }
    };
    out.headers_mut().extend(keep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Anthropic-shaped requests in (`/v1/messages`) and OpenAI answers back: arbitrary
        /// JSON is translated or refused, never a panic.
        #[test]
        fn arbitrary_messages_requests_and_answers_never_panic(
            req in crate::providers::fuzz::json_value(),
            done in crate::providers::fuzz::json_value(),
        ) {
            let _ = to_openai(&req);
            let _ = to_anthropic(&done);
            let _ = anthropic_usage(&done);
        }
    }

    #[test]
    fn requests_translate_to_openai() {
        let o = to_openai(&json!({
            "model": "chat", "max_tokens": 64, "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]},
            ],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
        }))
        .unwrap();
        assert_eq!(
            o["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            o["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(
            o["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "42"})
        );
        assert_eq!(
            o["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(
            (o["tool_choice"].clone(), o["stop"].clone()),
            (json!("required"), json!(["END"]))
        );
        assert!(
            to_openai(&json!({"model": "m", "messages": []}))
                .unwrap_err()
                .contains("max_tokens")
        );
    }

    #[test]
    fn stream_events_follow_anthropics_order() {
        let mut t = Translate::default();
        let chunk = |d: Value| format!("data: {d}\n\n");
        let mut text = String::new();
        text.push_str(&chunk(json!({"id": "a", "model": "m", "choices": [{"delta": {"role": "assistant", "content": "He"}}]})));
        text.push_str(&chunk(json!({"id": "a", "model": "m", "choices": [{"delta": {"content": "llo"}, "finish_reason": "stop"}]})));
        text.push_str(&chunk(json!({"id": "a", "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})));
        text.push_str("data: [DONE]\n\n");
        // Fed in awkward pieces, as a network delivers them.
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(7) {
            events.extend(t.feed(piece));
        }
        let kinds: Vec<String> = events
            .iter()
            .map(|e| {
                String::from_utf8_lossy(e)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("event: ")
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta = String::from_utf8_lossy(&events[5]).to_string();
        assert!(
            delta.contains("\"end_turn\"") && delta.contains("\"output_tokens\":2"),
            "{delta}"
        );
    }

    #[test]
    fn streamed_tool_calls_become_tool_use_blocks_after_the_text() {
        let mut t = Translate::default();
        let chunk = |d: Value| format!("data: {d}\n\n");
        let mut text = String::new();
        text.push_str(&chunk(
            json!({"id": "a", "model": "m", "choices": [{"delta": {"content": "Looking"}}]}),
        ));
        text.push_str(&chunk(json!({"id": "a", "model": "m", "choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "w", "arguments": ""}}]}}]})));
        text.push_str(&chunk(
            json!({"id": "a", "model": "m", "choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"c\":"}}]}}]}),
        ));
        text.push_str(&chunk(
            json!({"id": "a", "model": "m", "choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]}),
        ));
        text.push_str(&chunk(json!({"id": "a", "model": "m", "choices": [], "usage": {
            "prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 20}}})));
        text.push_str("data: [DONE]\n\n");
        let events: Vec<String> = t
            .feed(text.as_bytes())
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        let all = events.join("");
        let tool_start = events
            .iter()
            .position(|e| e.contains("\"tool_use\""))
            .unwrap_or(0);
        assert!(
            events[tool_start].contains("\"index\":1"),
            "the tool block follows the text block"
        );
        assert!(events[tool_start - 1].starts_with("event: content_block_stop"));
        let args: String = events
            .iter()
            .filter(|e| e.contains("input_json_delta"))
            .filter_map(|e| e.lines().nth(1))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim_start_matches("data: ")).ok())
            .filter_map(|v| v["delta"]["partial_json"].as_str().map(str::to_string))
            .collect();
        assert_eq!(args, "{\"c\":1}");
        assert!(all.contains("\"stop_reason\":\"tool_use\""), "{all}");
        assert!(
            all.contains("\"input_tokens\":10") && all.contains("\"cache_read_input_tokens\":20"),
            "{all}"
        );
    }
}
