//! Anthropic's Messages API (`anthropic/…`): OpenAI chat requests become `/v1/messages`
//! calls (system prompt apart, content blocks, images, tools and tool results, a JSON
//! `response_format` through a forced tool); answers, streams (`message_start` …
//! `message_stop`), usage with cache tokens and error bodies come back in OpenAI's shapes.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{
    Adapter, ByteStream, Chunks, Completion, JSON_TOOL, Outbound, ToolChoice, Translator,
    Unsupported, data_url, functions, image_url, json_format, max_tokens, openai_error, push_turn,
    sse_events, stops, text_of, tool_choice, translated, usage,
};
use crate::config::Deployment;

/// The API version header every call sends.
const VERSION: &str = "2023-06-01";

/// Output limit when the request names none (Anthropic requires one).
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The Anthropic adapter.
#[derive(Debug)]
pub struct Anthropic;

/// An OpenAI content part as an Anthropic block.
fn block(part: &Value) -> Result<Value, Unsupported> {
    match part["type"].as_str() {
        Some("text") | None => {
            let mut b = json!({"type": "text", "text": part["text"].as_str().unwrap_or("")});
            if !part["cache_control"].is_null() {
                b["cache_control"] = part["cache_control"].clone();
            }
            Ok(b)
        }
        Some("image_url") => {
            let url = image_url(part);
            Ok(match data_url(url) {
                Some((media, data)) => json!({"type": "image",
                    "source": {"type": "base64", "media_type": media, "data": data}}),
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            })
        }
        Some(other) => Err(Unsupported(format!(
            "content part type '{other}' cannot be sent to anthropic (text and image_url can)"
        ))),
    }
}

fn blocks(content: &Value) -> Result<Vec<Value>, Unsupported> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts.iter().map(block).collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(Unsupported(
            "a message content must be text or parts".into(),
        )),
    }
}

/// The Messages request for an OpenAI chat body.
pub(crate) fn request(body: &Value, stream: bool) -> Result<Value, Unsupported> {
    super::one_choice(body, "anthropic")?;
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str().unwrap_or("") {
            "system" | "developer" => system.extend(blocks(&m["content"])?),
            "user" => push_turn(&mut messages, "user", "content", blocks(&m["content"])?),
            "assistant" => {
                let mut content: Vec<Value> = blocks(&m["content"])?
                    .into_iter()
                    .filter(|b| b["type"] != "text" || b["text"].as_str() != Some(""))
                    .collect();
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or(json!({}));
                    content.push(json!({"type": "tool_use", "id": call["id"],
                        "name": call["function"]["name"], "input": input}));
                }
                push_turn(&mut messages, "assistant", "content", content);
            }
            "tool" | "function" => {
                let id = m["tool_call_id"].as_str().unwrap_or("");
                push_turn(
                    &mut messages,
                    "user",
                    "content",
                    vec![json!({"type": "tool_result", "tool_use_id": id,
                        "content": text_of(&m["content"])})],
                );
            }
            other => {
                return Err(Unsupported(format!(
                    "message role '{other}' is not system, developer, user, assistant or tool"
                )));
            }
        }
    }
    let mut req = Map::new();
    req.insert("model".into(), body["model"].clone());
    req.insert("messages".into(), Value::Array(messages));
    req.insert(
        "max_tokens".into(),
        json!(max_tokens(body).unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        req.insert("system".into(), Value::Array(system));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ] {
        if !body[from].is_null() {
            req.insert(to.into(), body[from].clone());
        }
    }
    if let Some(s) = stops(body) {
        req.insert("stop_sequences".into(), json!(s));
    }
    if let Some(u) = body["user"].as_str() {
        req.insert("metadata".into(), json!({"user_id": u}));
    }
    if !body["thinking"].is_null() {
        req.insert("thinking".into(), body["thinking"].clone());
    }
    let mut tools: Vec<Value> = functions(body)
        .into_iter()
        .map(|(name, description, parameters)| {
            let mut t = json!({"name": name, "input_schema": parameters});
            if let Some(d) = description {
                t["description"] = json!(d);
            }
            t
        })
        .collect();
    let mut choice = match tool_choice(body) {
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Named(n)) => Some(json!({"type": "tool", "name": n})),
        None => None,
    };
    if let Some(schema) = json_format(body) {
        // No JSON mode: a forced tool whose input is the answer (LiteLLM does the same).
        tools.push(
            json!({"name": JSON_TOOL, "description": "Respond with this JSON.",
            "input_schema": schema}),
        );
        choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
    }
    if body["parallel_tool_calls"] == false
        && let Some(c) = choice.as_mut()
        && c["type"] != "none"
    {
        c["disable_parallel_tool_use"] = json!(true);
    }
    if !tools.is_empty() {
        req.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = choice {
        req.insert("tool_choice".into(), c);
    }
    if stream {
        req.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(req))
}

/// OpenAI's finish reason for Anthropic's stop reason.
fn finish(stop: Option<&str>, json_tool: bool) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") if !json_tool => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage for Anthropic's (`input_tokens` leaves out cache reads and writes).
fn usage_of(u: &Value) -> Value {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let (read, write) = (
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    usage(
        n("input_tokens") + read + write,
        n("output_tokens"),
        read,
        write,
    )
}

/// The OpenAI completion of an Anthropic message.
pub(crate) fn completion(m: &Value) -> Completion {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let mut json_tool = false;
    for b in m["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("thinking") => reasoning.push_str(b["thinking"].as_str().unwrap_or("")),
            Some("tool_use") if b["name"] == JSON_TOOL => {
                json_tool = true;
                text.push_str(&b["input"].to_string());
            }
            Some("tool_use") => calls.push((
                b["id"].as_str().unwrap_or("").to_string(),
                b["name"].as_str().unwrap_or("").to_string(),
                b["input"].to_string(),
            )),
            _ => {}
        }
    }
    Completion {
        id: m["id"].as_str().unwrap_or("").to_string(),
        model: m["model"].as_str().unwrap_or("").to_string(),
        text: (!text.is_empty() || calls.is_empty()).then_some(text),
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls: calls,
        finish: finish(m["stop_reason"].as_str(), json_tool),
        usage: usage_of(&m["usage"]),
    }
}

/// An Anthropic error body (`{"type": "error", "error": {"type", "message"}}`) in OpenAI's shape.
pub(crate) fn error(status: StatusCode, body: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect());
    openai_error(status, &message, v["error"]["type"].as_str())
}

impl Adapter for Anthropic {
    fn prepare(
        &self,
        d: &Deployment,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<Outbound, Unsupported> {
        if path != "chat/completions" {
            return Err(Unsupported(format!(
                "anthropic serves chat completions only, not /v1/{path}"
            )));
        }
        let req = request(body, stream)?;
        let base = d
            .api_base
            .clone()
            .unwrap_or_else(|| "https://api.anthropic.com".to_string());
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let mut headers = vec![("anthropic-version", VERSION.to_string())];
        if let Some(k) = &d.api_key {
            headers.push(("x-api-key", k.clone()));
        }
        Ok(Outbound {
            url: format!("{base}/v1/messages"),
            headers,
            body: req.to_string().into_bytes(),
        })
    }

    fn answer(
        &self,
        _d: &Deployment,
        _path: &str,
        _request: &Value,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let m: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("anthropic answered something that is not JSON: {e}"))?;
        Ok(completion(&m).to_json())
    }

    fn error(&self, status: StatusCode, body: Bytes) -> Bytes {
        error(status, &body)
    }

    fn stream(&self, d: &Deployment, upstream: ByteStream) -> ByteStream {
        translated(upstream, Stream::new(&d.model))
    }
}

/// Anthropic's stream events as OpenAI chunks.
pub(crate) struct Stream {
    buf: Vec<u8>,
    chunks: Chunks,
    /// Anthropic block index → OpenAI tool-call index (`None`: the JSON tool, sent as text).
    tools: Vec<(u64, Option<usize>)>,
    next_tool: usize,
    stop: Option<String>,
    json_tool: bool,
    input: Value,
    output: u64,
    done: bool,
}

impl Stream {
    pub(crate) fn new(model: &str) -> Self {
        Stream {
            buf: Vec::new(),
            chunks: Chunks::new(model),
            tools: Vec::new(),
            next_tool: 0,
            stop: None,
            json_tool: false,
            input: Value::Null,
            output: 0,
            done: false,
        }
    }

    fn usage(&self) -> Value {
        let mut u = self.input.clone();
        if !u.is_object() {
            u = json!({});
        }
        u["output_tokens"] = json!(self.output);
        usage_of(&u)
    }
}

impl Translator for Stream {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for (name, data) in sse_events(&mut self.buf, bytes) {
            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let kind = v["type"].as_str().unwrap_or(name.as_str()).to_string();
            match kind.as_str() {
                "message_start" => {
                    let m = &v["message"];
                    if let Some(id) = m["id"].as_str() {
                        self.chunks.id = id.to_string();
                    }
                    if let Some(model) = m["model"].as_str() {
                        self.chunks.model = model.to_string();
                    }
                    self.input = m["usage"].clone();
                    self.output = m["usage"]["output_tokens"].as_u64().unwrap_or(0);
                    self.chunks.delta(&mut out, json!({"content": ""}));
                }
                "content_block_start" => {
                    let b = &v["content_block"];
                    let index = v["index"].as_u64().unwrap_or(0);
                    if b["type"] == "tool_use" {
                        if b["name"] == JSON_TOOL {
                            self.json_tool = true;
                            self.tools.push((index, None));
                        } else {
                            let i = self.next_tool;
                            self.next_tool += 1;
                            self.tools.push((index, Some(i)));
                            self.chunks.delta(
                                &mut out,
                                json!({"tool_calls": [{"index": i, "id": b["id"], "type": "function",
                                    "function": {"name": b["name"], "arguments": ""}}]}),
                            );
                        }
                    }
                }
                "content_block_delta" => {
                    let d = &v["delta"];
                    let index = v["index"].as_u64().unwrap_or(0);
                    match d["type"].as_str() {
                        Some("text_delta") => {
                            self.chunks.delta(&mut out, json!({"content": d["text"]}));
                        }
                        Some("thinking_delta") => {
                            self.chunks
                                .delta(&mut out, json!({"reasoning_content": d["thinking"]}));
                        }
                        Some("input_json_delta") => {
                            let part = d["partial_json"].as_str().unwrap_or("");
                            match self.tools.iter().find(|(b, _)| *b == index) {
                                Some((_, Some(i))) => self.chunks.delta(
                                    &mut out,
                                    json!({"tool_calls": [{"index": i,
                                        "function": {"arguments": part}}]}),
                                ),
                                Some((_, None)) => {
                                    self.chunks.delta(&mut out, json!({"content": part}))
                                }
                                None => {}
                            }
                        }
                        _ => {}
                    }
                }
                "message_delta" => {
                    if let Some(s) = v["delta"]["stop_reason"].as_str() {
                        self.stop = Some(s.to_string());
                    }
                    if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                        self.output = n;
                    }
                    // Later API versions repeat the input counts here.
                    if let Some(u) = v["usage"].as_object() {
                        for (k, n) in u {
                            if k != "output_tokens" && n.is_u64() && self.input.is_object() {
                                self.input[k] = n.clone();
                            }
                        }
                    }
                }
                "message_stop" => {
                    self.done = true;
                    let f = finish(self.stop.as_deref(), self.json_tool);
                    let u = self.usage();
                    self.chunks.end(&mut out, f, Some(u));
                }
                "error" => {
                    let status = match v["error"]["type"].as_str() {
                        Some("overloaded_error") => StatusCode::SERVICE_UNAVAILABLE,
                        Some("rate_limit_error") => StatusCode::TOO_MANY_REQUESTS,
                        _ => StatusCode::BAD_GATEWAY,
                    };
                    let m = v["error"]["message"]
                        .as_str()
                        .unwrap_or("anthropic stream error");
                    self.chunks.error(&mut out, status, m);
                    self.done = true;
                }
                _ => {} // ping, content_block_stop
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.done {
            self.chunks.error(
                &mut out,
                StatusCode::BAD_GATEWAY,
                "anthropic's stream ended before message_stop",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_requests_become_messages_with_system_tools_and_merged_tool_results() {
        let body = json!({"model": "claude-x", "max_tokens": 100, "stop": "END", "user": "u1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Oslo\"}"}},
                    {"id": "t2", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "cold"},
                {"role": "tool", "tool_call_id": "t2", "content": "warm"}],
            "tools": [{"type": "function", "function": {"name": "w", "description": "weather",
                "parameters": {"type": "object", "properties": {"c": {"type": "string"}}}}}],
            "tool_choice": "required"});
        let r = request(&body, true).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r["system"][0]["text"], "Be brief.");
        assert_eq!(r["max_tokens"], 100);
        assert_eq!(r["stop_sequences"], json!(["END"]));
        assert_eq!(r["metadata"]["user_id"], "u1");
        assert_eq!(r["stream"], true);
        let m = r["messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0]["content"][1]["source"]["media_type"], "image/png");
        assert_eq!(m[1]["content"][0]["type"], "tool_use");
        assert_eq!(m[1]["content"][1]["input"]["c"], "Rome");
        assert_eq!(m[2]["content"].as_array().map(Vec::len), Some(2));
        assert_eq!(m[2]["content"][1]["tool_use_id"], "t2");
        assert_eq!(r["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(r["tool_choice"]["type"], "any");
        let two = request(&json!({"n": 2, "messages": []}), false);
        assert!(two.is_err());
    }

    #[test]
    fn answers_map_tool_use_cache_usage_and_the_json_tool() {
        let m = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "Oslo"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5,
                "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}});
        let c: Value = serde_json::from_slice(&completion(&m).to_json()).unwrap_or_default();
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][0]["message"]["content"], "Let me look.");
        let call = &c["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"c\":\"Oslo\"}");
        assert_eq!(c["usage"]["prompt_tokens"], 130);
        assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(c["usage"]["cache_creation_input_tokens"], 20);
        let j = json!({"id": "m", "stop_reason": "tool_use", "usage": {},
            "content": [{"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"a": 1}}]});
        let c: Value = serde_json::from_slice(&completion(&j).to_json()).unwrap_or_default();
        assert_eq!(c["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn streams_become_openai_chunks_with_tool_calls_and_usage() {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 4}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "w", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"c\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let mut sse = String::new();
        for (name, data) in events {
            sse.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        let mut s = Stream::new("claude-x");
        // Fed in small pieces: events cut anywhere are held until complete.
        let mut out = Vec::new();
        for piece in sse.as_bytes().chunks(7) {
            out.extend(s.feed(piece).unwrap_or_default());
        }
        out.extend(s.finish());
        let text = String::from_utf8(out).unwrap_or_default();
        let chunks: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap_or_default())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["id"], "msg_1");
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hi");
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, "{\"c\":\"Oslo\"}");
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[n - 1]["usage"]["prompt_tokens"], 16);
        assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 9);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event() {
        let mut s = Stream::new("m");
        let _ =
            s.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n");
        let end = String::from_utf8(s.finish()).unwrap_or_default();
        assert!(end.contains("\"error\""), "{end}");
    }
}
