//! Google's Gemini API (`gemini/…`): chat requests become `generateContent` calls
//! (`streamGenerateContent?alt=sse` when streaming; system instruction, `user`/`model`
//! turns, inline images, function declarations, calls and responses, JSON mode with a schema),
//! embeddings become `batchEmbedContents`; answers, streams, usage (cached and thinking
//! tokens) and error bodies come back in OpenAI's shapes.

use std::collections::HashMap;

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{
    Adapter, ByteStream, Chunks, Completion, Outbound, ToolChoice, Translator, Unsupported,
    data_url, functions, image_url, json_format, max_tokens, openai_error, push_turn, sse_events,
    stops, text_of, tool_choice, translated, usage,
};
use crate::config::Deployment;

/// The Gemini adapter.
#[derive(Debug)]
pub struct Gemini;

/// A media type guessed from a URL's extension (Gemini's `fileData` needs one).
fn media_of(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next().unwrap_or("") {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "image/jpeg",
    }
}

fn parts(content: &Value) -> Result<Vec<Value>, Unsupported> {
    match content {
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") | None => Ok(json!({"text": p["text"].as_str().unwrap_or("")})),
                Some("image_url") => {
                    let url = image_url(p);
                    Ok(match data_url(url) {
                        Some((media, data)) => {
                            json!({"inlineData": {"mimeType": media, "data": data}})
                        }
                        None => json!({"fileData": {"mimeType": media_of(url), "fileUri": url}}),
                    })
                }
                Some(other) => Err(Unsupported(format!(
                    "content part type '{other}' cannot be sent to gemini (text and image_url can)"
                ))),
            })
            .collect(),
        _ => Err(Unsupported(
            "a message content must be text or parts".into(),
        )),
    }
}

/// The `generateContent` request for an OpenAI chat body.
pub(crate) fn request(body: &Value) -> Result<Value, Unsupported> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool results name their function in Gemini; OpenAI's carry only the call's id.
    let mut names: HashMap<String, String> = HashMap::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str().unwrap_or("") {
            "system" | "developer" => system.extend(parts(&m["content"])?),
            "user" => push_turn(&mut contents, "user", "parts", parts(&m["content"])?),
            "assistant" => {
                let mut p: Vec<Value> = parts(&m["content"])?
                    .into_iter()
                    .filter(|p| p["text"].as_str() != Some(""))
                    .collect();
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let name = call["function"]["name"].as_str().unwrap_or("").to_string();
                    if let Some(id) = call["id"].as_str() {
                        names.insert(id.to_string(), name.clone());
                    }
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let args: Value = serde_json::from_str(args).unwrap_or(json!({}));
                    p.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push_turn(&mut contents, "model", "parts", p);
            }
            "tool" | "function" => {
                let id = m["tool_call_id"].as_str().unwrap_or("");
                let name = m["name"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| names.get(id).cloned())
                    .ok_or_else(|| {
                        Unsupported(format!(
                            "the tool message for call '{id}' names no function and no \
                             earlier assistant message made that call"
                        ))
                    })?;
                let text = text_of(&m["content"]);
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({"content": text}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
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
    req.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        req.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut config = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if !body[from].is_null() {
            config.insert(to.into(), body[from].clone());
        }
    }
    if let Some(n) = max_tokens(body) {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(s) = stops(body) {
        config.insert("stopSequences".into(), json!(s));
    }
    if let Some(schema) = json_format(body) {
        config.insert("responseMimeType".into(), json!("application/json"));
        if body["response_format"]["type"] == "json_schema" {
            config.insert("responseJsonSchema".into(), schema);
        }
    }
    if !config.is_empty() {
        req.insert("generationConfig".into(), Value::Object(config));
    }
    let decls: Vec<Value> = functions(body)
        .into_iter()
        .map(|(name, description, parameters)| {
            let mut f = json!({"name": name, "parameters": parameters});
            if let Some(d) = description {
                f["description"] = json!(d);
            }
            f
        })
        .collect();
    if !decls.is_empty() {
        req.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    let mode = match tool_choice(body) {
        Some(ToolChoice::Auto) => Some(json!({"mode": "AUTO"})),
        Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
        Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
        Some(ToolChoice::Named(n)) => Some(json!({"mode": "ANY", "allowedFunctionNames": [n]})),
        None => None,
    };
    if let Some(m) = mode {
        req.insert("toolConfig".into(), json!({"functionCallingConfig": m}));
    }
    Ok(Value::Object(req))
}

/// OpenAI's finish reason for Gemini's.
fn finish(reason: Option<&str>, calls: bool) -> &'static str {
    match reason {
        _ if calls => "tool_calls",
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage for Gemini's `usageMetadata` (thinking tokens count as output, as billed).
fn usage_of(u: &Value) -> Value {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    usage(
        n("promptTokenCount"),
        n("candidatesTokenCount") + n("thoughtsTokenCount"),
        n("cachedContentTokenCount"),
        0,
    )
}

/// Text, thoughts and function calls of a candidate's parts.
fn read_parts(c: &Value) -> (String, String, Vec<(String, String, String)>) {
    let mut text = String::new();
    let mut thought = String::new();
    let mut calls = Vec::new();
    for p in c["content"]["parts"].as_array().into_iter().flatten() {
        if let Some(t) = p["text"].as_str() {
            if p["thought"] == true {
                thought.push_str(t);
            } else {
                text.push_str(t);
            }
        }
        if p["functionCall"].is_object() {
            let f = &p["functionCall"];
            let id = f["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()));
            calls.push((
                id,
                f["name"].as_str().unwrap_or("").to_string(),
                f["args"].to_string(),
            ));
        }
    }
    (text, thought, calls)
}

fn answer(v: &Value, model: &str) -> Bytes {
    let candidates = v["candidates"].as_array().cloned().unwrap_or_default();
    if candidates.len() <= 1 {
        let c = candidates.first().cloned().unwrap_or(Value::Null);
        let (text, thought, calls) = read_parts(&c);
        let reason = c["finishReason"].as_str();
        return Completion {
            id: v["responseId"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())),
            model: v["modelVersion"].as_str().unwrap_or(model).to_string(),
            text: (!text.is_empty() || calls.is_empty()).then_some(text),
            reasoning: (!thought.is_empty()).then_some(thought),
            finish: finish(reason, !calls.is_empty()),
            tool_calls: calls,
            usage: usage_of(&v["usageMetadata"]),
        }
        .to_json();
    }
    // Several candidates (`n` > 1): one choice each.
    let choices: Vec<Value> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (text, _, calls) = read_parts(c);
            let mut message = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(
                    calls
                        .iter()
                        .map(|(id, name, args)| {
                            json!({"id": id, "type": "function",
                                "function": {"name": name, "arguments": args}})
                        })
                        .collect(),
                );
            }
            json!({"index": c["index"].as_u64().unwrap_or(i as u64), "message": message,
                "finish_reason": finish(c["finishReason"].as_str(), !calls.is_empty())})
        })
        .collect();
    Bytes::from(
        json!({"id": v["responseId"], "object": "chat.completion", "created": super::unix_now(),
            "model": v["modelVersion"].as_str().unwrap_or(model), "choices": choices,
            "usage": usage_of(&v["usageMetadata"])})
        .to_string(),
    )
}

/// A Gemini error body (`{"error": {"code", "message", "status"}}`) in OpenAI's shape.
fn error(status: StatusCode, body: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = if v.is_array() {
        &v[0]["error"]
    } else {
        &v["error"]
    };
    let message = e["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect());
    openai_error(status, &message, e["status"].as_str())
}

fn input_texts(input: &Value) -> Result<Vec<String>, Unsupported> {
    match input {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()),
        _ => Err(Unsupported(
            "gemini embeds text: \"input\" must be a string or a list of strings".into(),
        )),
    }
}

impl Adapter for Gemini {
    fn prepare(
        &self,
        d: &Deployment,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<Outbound, Unsupported> {
        let base = d
            .api_base
            .clone()
            .unwrap_or_else(|| "https://generativelanguage.googleapis.com".to_string());
        let base = base.trim_end_matches('/');
        let base = if base.ends_with("/v1beta") || base.ends_with("/v1") {
            base.to_string()
        } else {
            format!("{base}/v1beta")
        };
        let model = d.model.strip_prefix("models/").unwrap_or(&d.model);
        let (url, req) = match path {
            "chat/completions" => (
                if stream {
                    format!("{base}/models/{model}:streamGenerateContent?alt=sse")
                } else {
                    format!("{base}/models/{model}:generateContent")
                },
                request(body)?,
            ),
            "embeddings" => {
                let requests: Vec<Value> = input_texts(&body["input"])?
                    .into_iter()
                    .map(|t| {
                        let mut r = json!({"model": format!("models/{model}"),
                            "content": {"parts": [{"text": t}]}});
                        if let Some(n) = body["dimensions"].as_u64() {
                            r["outputDimensionality"] = json!(n);
                        }
                        r
                    })
                    .collect();
                (
                    format!("{base}/models/{model}:batchEmbedContents"),
                    json!({"requests": requests}),
                )
            }
            other => {
                return Err(Unsupported(format!(
                    "gemini serves chat completions and embeddings, not /v1/{other}"
                )));
            }
        };
        Ok(Outbound {
            url,
            headers: d
                .api_key
                .clone()
                .map(|k| ("x-goog-api-key", k))
                .into_iter()
                .collect(),
            body: req.to_string().into_bytes(),
        })
    }

    fn answer(
        &self,
        d: &Deployment,
        path: &str,
        request: &Value,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("gemini answered something that is not JSON: {e}"))?;
        if path == "embeddings" {
            let data: Vec<Value> = v["embeddings"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e["values"]}))
                .collect();
            // Gemini does not count embedding tokens: about four characters a token.
            let chars: usize = input_texts(&request["input"])
                .unwrap_or_default()
                .iter()
                .map(|t| t.chars().count())
                .sum();
            let tokens = chars.div_ceil(4);
            return Ok(Bytes::from(
                json!({"object": "list", "model": d.model, "data": data,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
                .to_string(),
            ));
        }
        Ok(answer(&v, &d.model))
    }

    fn error(&self, status: StatusCode, body: Bytes) -> Bytes {
        error(status, &body)
    }

    fn stream(&self, d: &Deployment, upstream: ByteStream) -> ByteStream {
        translated(
            upstream,
            Stream {
                buf: Vec::new(),
                chunks: Chunks::new(&d.model),
                reason: None,
                calls: 0,
                usage: Value::Null,
                failed: false,
            },
        )
    }
}

/// Gemini's SSE (`data: {GenerateContentResponse}` per chunk, no end marker) as OpenAI chunks.
struct Stream {
    buf: Vec<u8>,
    chunks: Chunks,
    reason: Option<String>,
    calls: usize,
    usage: Value,
    failed: bool,
}

impl Translator for Stream {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for (_, data) in sse_events(&mut self.buf, bytes) {
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if v["error"].is_object() {
                let status = v["error"]["code"]
                    .as_u64()
                    .and_then(|c| StatusCode::from_u16(c as u16).ok())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let m = v["error"]["message"]
                    .as_str()
                    .unwrap_or("gemini stream error");
                self.chunks.error(&mut out, status, m);
                self.failed = true;
                continue;
            }
            if let Some(id) = v["responseId"].as_str() {
                self.chunks.id = id.to_string();
            }
            let c = &v["candidates"][0];
            let (text, thought, calls) = read_parts(c);
            if !thought.is_empty() {
                self.chunks
                    .delta(&mut out, json!({"reasoning_content": thought}));
            }
            if !text.is_empty() {
                self.chunks.delta(&mut out, json!({"content": text}));
            }
            for (id, name, args) in calls {
                let i = self.calls;
                self.calls += 1;
                self.chunks.delta(
                    &mut out,
                    json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                        "function": {"name": name, "arguments": args}}]}),
                );
            }
            if let Some(r) = c["finishReason"].as_str() {
                self.reason = Some(r.to_string());
            }
            if v["usageMetadata"].is_object() {
                self.usage = v["usageMetadata"].clone();
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        if self.reason.is_none() && self.usage.is_null() {
            self.chunks.error(
                &mut out,
                StatusCode::BAD_GATEWAY,
                "gemini's stream ended before its last candidate",
            );
            return out;
        }
        let f = finish(self.reason.as_deref(), self.calls > 0);
        let u = (!self.usage.is_null()).then(|| usage_of(&self.usage));
        self.chunks.end(&mut out, f, u);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_requests_become_generate_content_with_tools_and_json_mode() {
        let body = json!({"model": "gemini-2.5-flash", "max_tokens": 50, "temperature": 0.2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"t\": -3}"},
                {"role": "tool", "tool_call_id": "c1", "content": "cold"}],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "w"}}});
        let r = request(&body).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r["systemInstruction"]["parts"][0]["text"], "Be brief.");
        let c = r["contents"].as_array().cloned().unwrap_or_default();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1]["role"], "model");
        assert_eq!(c[1]["parts"][0]["functionCall"]["args"]["c"], "Oslo");
        assert_eq!(c[2]["parts"][0]["functionResponse"]["name"], "w");
        assert_eq!(c[2]["parts"][0]["functionResponse"]["response"]["t"], -3);
        assert_eq!(
            c[2]["parts"][1]["functionResponse"]["response"]["content"],
            "cold"
        );
        assert_eq!(r["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(
            r["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(
            r["generationConfig"]["responseJsonSchema"]["properties"]["a"]["type"],
            "integer"
        );
        assert_eq!(r["tools"][0]["functionDeclarations"][0]["name"], "w");
        assert_eq!(
            r["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"][0],
            "w"
        );
        let orphan = json!({"messages": [{"role": "tool", "tool_call_id": "zz", "content": "x"}]});
        assert!(request(&orphan).is_err());
    }

    #[test]
    fn answers_and_streams_read_parts_calls_and_usage() {
        let v = json!({"responseId": "r1", "modelVersion": "gemini-2.5-flash",
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "hmm", "thought": true}, {"text": "Hello"},
                {"functionCall": {"name": "w", "args": {"c": "Oslo"}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3,
                "thoughtsTokenCount": 2, "cachedContentTokenCount": 4}});
        let c: Value = serde_json::from_slice(&answer(&v, "m")).unwrap_or_default();
        let m = &c["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["reasoning_content"], "hmm");
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            "{\"c\":\"Oslo\"}"
        );
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["usage"]["completion_tokens"], 5);
        assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

        let mut s = Stream {
            buf: Vec::new(),
            chunks: Chunks::new("m"),
            reason: None,
            calls: 0,
            usage: Value::Null,
            failed: false,
        };
        let a = json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]});
        let b = json!({"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2}});
        let mut out = s
            .feed(format!("data: {a}\r\n\r\ndata: {b}\r\n\r\n").as_bytes())
            .unwrap_or_default();
        out.extend(s.finish());
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
        assert!(text.contains("\"total_tokens\":9"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors_keep_their_message_and_status_name() {
        let e = error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}"#,
        );
        let v: Value = serde_json::from_slice(&e).unwrap_or_default();
        assert_eq!(v["error"]["message"], "Quota exceeded");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED");
    }
}
