//! AWS Bedrock's Converse API (`bedrock/…`, `bedrock/converse/…`): chat requests become
//! `/model/{id}/converse` (or `/converse-stream`) calls signed with SigV4 (or sent with a
//! Bedrock API key as a bearer token); the binary `vnd.amazon.eventstream` stream, tool use,
//! usage with cache tokens and error bodies come back in OpenAI's shapes.
//!
//! SigV4 is written here over `hmac` and `sha2` rather than taken from `aws-sigv4`: one signed
//! POST is forty lines, while that crate brings six smithy crates into a 2-core build; it is
//! checked against AWS's published example signature below.

use std::collections::HashMap;

use axum::http::StatusCode;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    Adapter, ByteStream, Chunks, Completion, JSON_TOOL, Outbound, ToolChoice, Translator,
    Unsupported, data_url, functions, image_url, json_format, max_tokens, openai_error, push_turn,
    stops, text_of, tool_choice, translated, usage,
};
use crate::config::Deployment;

/// The Bedrock adapter.
#[derive(Debug)]
pub struct Bedrock;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (SigV4's rule).
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a SigV4 signature covers.
pub(crate) struct Signing<'a> {
    pub method: &'a str,
    /// The path as sent (each segment already percent-encoded once).
    pub path: &'a str,
    /// The canonical query string (sorted, encoded), empty for none.
    pub query: &'a str,
    /// Headers to sign, lower-case names (host and x-amz-date included).
    pub headers: &'a [(String, String)],
    pub payload: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
    pub key_id: &'a str,
    pub secret: &'a str,
}

/// The `authorization` header value of a SigV4-signed request.
pub(crate) fn sign(s: &Signing<'_>) -> String {
    // Every service but S3 encodes each path segment a second time in the canonical request.
    let canonical_uri = s
        .path
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{}\n{canonical_uri}\n{}\n{canonical_headers}\n{signed}\n{}",
        s.method,
        s.query,
        hex(&Sha256::digest(s.payload))
    );
    let date = s.amz_date.get(..8).unwrap_or("");
    let scope = format!("{date}/{}/{}/aws4_request", s.region, s.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        s.amz_date,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{}", s.secret).as_bytes(), date.as_bytes());
    let k = hmac(&k, s.region.as_bytes());
    let k = hmac(&k, s.service.as_bytes());
    let k = hmac(&k, b"aws4_request");
    let signature = hex(&hmac(&k, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        s.key_id
    )
}

/// Now as SigV4's `YYYYMMDDTHHMMSSZ`.
fn amz_now() -> String {
    let ms = crate::keys::now_ms();
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

fn image(url: &str) -> Result<Value, Unsupported> {
    let (media, data) = data_url(url).ok_or_else(|| {
        Unsupported("bedrock takes images as data: URLs (base64), not links".into())
    })?;
    let format = media.strip_prefix("image/").unwrap_or("png");
    let format = if format == "jpg" { "jpeg" } else { format };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn content(c: &Value) -> Result<Vec<Value>, Unsupported> {
    match c {
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Null => Ok(Vec::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") | None => Ok(json!({"text": p["text"].as_str().unwrap_or("")})),
                Some("image_url") => image(image_url(p)),
                Some(other) => Err(Unsupported(format!(
                    "content part type '{other}' cannot be sent to bedrock (text and image_url can)"
                ))),
            })
            .collect(),
        _ => Err(Unsupported(
            "a message content must be text or parts".into(),
        )),
    }
}

/// The Converse request for an OpenAI chat body.
pub(crate) fn request(body: &Value) -> Result<Value, Unsupported> {
    super::one_choice(body, "bedrock")?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str().unwrap_or("") {
            "system" | "developer" => system.push(json!({"text": text_of(&m["content"])})),
            "user" => push_turn(&mut messages, "user", "content", content(&m["content"])?),
            "assistant" => {
                let mut c: Vec<Value> = content(&m["content"])?
                    .into_iter()
                    .filter(|b| b["text"].as_str() != Some(""))
                    .collect();
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or(json!({}));
                    c.push(json!({"toolUse": {"toolUseId": call["id"],
                        "name": call["function"]["name"], "input": input}}));
                }
                push_turn(&mut messages, "assistant", "content", c);
            }
            "tool" | "function" => {
                let text = text_of(&m["content"]);
                let result = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => json!([{"json": v}]),
                    _ => json!([{"text": text}]),
                };
                push_turn(
                    &mut messages,
                    "user",
                    "content",
                    vec![json!({"toolResult": {"toolUseId": m["tool_call_id"],
                        "content": result}})],
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
    req.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        req.insert("system".into(), Value::Array(system));
    }
    let mut config = Map::new();
    if let Some(n) = max_tokens(body) {
        config.insert("maxTokens".into(), json!(n));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if !body[from].is_null() {
            config.insert(to.into(), body[from].clone());
        }
    }
    if let Some(s) = stops(body) {
        config.insert("stopSequences".into(), json!(s));
    }
    if !config.is_empty() {
        req.insert("inferenceConfig".into(), Value::Object(config));
    }
    if !body["top_k"].is_null() {
        req.insert(
            "additionalModelRequestFields".into(),
            json!({"top_k": body["top_k"]}),
        );
    }
    let mut tools: Vec<Value> = functions(body)
        .into_iter()
        .map(|(name, description, parameters)| {
            let mut spec = json!({"name": name, "inputSchema": {"json": parameters}});
            if let Some(d) = description {
                spec["description"] = json!(d);
            }
            json!({"toolSpec": spec})
        })
        .collect();
    let mut choice = match tool_choice(body) {
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Named(n)) => Some(json!({"tool": {"name": n}})),
        Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        // Converse has no "none": the tools stay declared (earlier turns may use them).
        Some(ToolChoice::None) | None => None,
    };
    if let Some(schema) = json_format(body) {
        tools.push(json!({"toolSpec": {"name": JSON_TOOL,
            "description": "Respond with this JSON.", "inputSchema": {"json": schema}}}));
        choice = Some(json!({"tool": {"name": JSON_TOOL}}));
    }
    if !tools.is_empty() {
        let mut tc = json!({"tools": tools});
        if let Some(c) = choice {
            tc["toolChoice"] = c;
        }
        req.insert("toolConfig".into(), tc);
    }
    Ok(Value::Object(req))
}

fn finish(stop: Option<&str>, json_tool: bool) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if !json_tool => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage for Converse's (`inputTokens` leaves out cache reads and writes).
fn usage_of(u: &Value) -> Value {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let (read, write) = (n("cacheReadInputTokens"), n("cacheWriteInputTokens"));
    usage(
        n("inputTokens") + read + write,
        n("outputTokens"),
        read,
        write,
    )
}

fn completion(v: &Value, model: &str) -> Completion {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let mut json_tool = false;
    for b in v["output"]["message"]["content"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(t) = b["text"].as_str() {
            text.push_str(t);
        }
        if let Some(t) = b["reasoningContent"]["reasoningText"]["text"].as_str() {
            reasoning.push_str(t);
        }
        let u = &b["toolUse"];
        if u.is_object() {
            if u["name"] == JSON_TOOL {
                json_tool = true;
                text.push_str(&u["input"].to_string());
            } else {
                calls.push((
                    u["toolUseId"].as_str().unwrap_or("").to_string(),
                    u["name"].as_str().unwrap_or("").to_string(),
                    u["input"].to_string(),
                ));
            }
        }
    }
    Completion {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        model: model.to_string(),
        text: (!text.is_empty() || calls.is_empty()).then_some(text),
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls: calls,
        finish: finish(v["stopReason"].as_str(), json_tool),
        usage: usage_of(&v["usage"]),
    }
}

/// The model id of a deployment (`converse/` is LiteLLM's route marker, not part of it).
fn model_id(d: &Deployment) -> &str {
    d.model.strip_prefix("converse/").unwrap_or(&d.model)
}

impl Adapter for Bedrock {
    fn prepare(
        &self,
        d: &Deployment,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<Outbound, Unsupported> {
        if path != "chat/completions" {
            return Err(Unsupported(format!(
                "bedrock (Converse) serves chat completions only, not /v1/{path}"
            )));
        }
        let req = request(body)?.to_string().into_bytes();
        let region = d.aws.region.clone().unwrap_or_else(|| "us-east-1".into());
        let base = d
            .aws
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
        let base = base.trim_end_matches('/');
        let path = format!(
            "/model/{}/{}",
            uri_encode(model_id(d)),
            if stream {
                "converse-stream"
            } else {
                "converse"
            }
        );
        let url = format!("{base}{path}");
        let mut headers = Vec::new();
        if let Some(token) = &d.api_key {
            headers.push(("authorization", format!("Bearer {token}")));
        } else {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| Unsupported(format!("bad Bedrock endpoint {base}: {e}")))?;
            let host = match (parsed.host_str(), parsed.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return Err(Unsupported(format!("bad Bedrock endpoint {base}"))),
            };
            let amz_date = amz_now();
            let mut signed = vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("host".to_string(), host),
                ("x-amz-date".to_string(), amz_date.clone()),
            ];
            if let Some(t) = &d.aws.session_token {
                signed.push(("x-amz-security-token".to_string(), t.clone()));
                headers.push(("x-amz-security-token", t.clone()));
            }
            let auth = sign(&Signing {
                method: "POST",
                path: parsed.path(),
                query: "",
                headers: &signed,
                payload: &req,
                region: &region,
                service: "bedrock",
                amz_date: &amz_date,
                key_id: d.aws.access_key_id.as_deref().unwrap_or(""),
                secret: d.aws.secret_access_key.as_deref().unwrap_or(""),
            });
            headers.push(("x-amz-date", amz_date));
            headers.push(("authorization", auth));
        }
        if stream {
            headers.push(("accept", "application/vnd.amazon.eventstream".into()));
        }
        Ok(Outbound {
            url,
            headers,
            body: req,
        })
    }

    fn answer(
        &self,
        d: &Deployment,
        _path: &str,
        _request: &Value,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("bedrock answered something that is not JSON: {e}"))?;
        Ok(completion(&v, model_id(d)).to_json())
    }

    fn error(&self, status: StatusCode, body: Bytes) -> Bytes {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
        openai_error(status, &message, None)
    }

    fn is_stream(&self, content_type: &str) -> bool {
        content_type.starts_with("application/vnd.amazon.eventstream")
    }

    fn stream(&self, d: &Deployment, upstream: ByteStream) -> ByteStream {
        translated(upstream, Stream::new(model_id(d)))
    }
}

/// One `vnd.amazon.eventstream` message: its string headers and payload.
#[derive(Debug, PartialEq)]
pub(crate) struct Frame {
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads eventstream messages out of a byte buffer (prelude and message CRC-32s checked).
pub(crate) fn frames(buf: &mut Vec<u8>) -> Result<Vec<Frame>, String> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 12 {
            return Ok(out);
        }
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let total = be(&buf[0..4]) as usize;
        let headers_len = be(&buf[4..8]) as usize;
        if crc32fast::hash(&buf[0..8]) != be(&buf[8..12]) {
            return Err("bedrock's event stream is corrupt (prelude checksum)".into());
        }
        if total < 16 + headers_len || total > 16 << 20 {
            return Err(format!(
                "bedrock's event stream has a bad message length {total}"
            ));
        }
        if buf.len() < total {
            return Ok(out);
        }
        if crc32fast::hash(&buf[0..total - 4]) != be(&buf[total - 4..total]) {
            return Err("bedrock's event stream is corrupt (message checksum)".into());
        }
        let mut headers = HashMap::new();
        let mut h = &buf[12..12 + headers_len];
        while !h.is_empty() {
            let n = h[0] as usize;
            if h.len() < 2 + n {
                return Err("bedrock's event stream has a bad header".into());
            }
            let name = String::from_utf8_lossy(&h[1..1 + n]).into_owned();
            let kind = h[1 + n];
            h = &h[2 + n..];
            let fixed = match kind {
                0 | 1 => Some(0),
                2 => Some(1),
                3 => Some(2),
                4 => Some(4),
                5 | 8 => Some(8),
                9 => Some(16),
                6 | 7 => None,
                _ => return Err(format!("bedrock's event stream has header type {kind}")),
            };
            match fixed {
                Some(len) if h.len() >= len => h = &h[len..],
                Some(_) => return Err("bedrock's event stream has a short header".into()),
                None => {
                    if h.len() < 2 {
                        return Err("bedrock's event stream has a short header".into());
                    }
                    let len = u16::from_be_bytes([h[0], h[1]]) as usize;
                    if h.len() < 2 + len {
                        return Err("bedrock's event stream has a short header".into());
                    }
                    if kind == 7 {
                        headers.insert(name, String::from_utf8_lossy(&h[2..2 + len]).into_owned());
                    }
                    h = &h[2 + len..];
                }
            }
        }
        let payload = buf[12 + headers_len..total - 4].to_vec();
        buf.drain(..total);
        out.push(Frame { headers, payload });
    }
}

/// Converse's stream events as OpenAI chunks.
struct Stream {
    buf: Vec<u8>,
    chunks: Chunks,
    /// Content block index → OpenAI tool-call index (`None`: the JSON tool, sent as text).
    tools: Vec<(u64, Option<usize>)>,
    next_tool: usize,
    stop: Option<String>,
    json_tool: bool,
    done: bool,
}

impl Stream {
    fn new(model: &str) -> Self {
        Stream {
            buf: Vec::new(),
            chunks: Chunks::new(model),
            tools: Vec::new(),
            next_tool: 0,
            stop: None,
            json_tool: false,
            done: false,
        }
    }
}

impl Translator for Stream {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        for f in frames(&mut self.buf)? {
            let v: Value = serde_json::from_slice(&f.payload).unwrap_or(Value::Null);
            if f.headers.get(":message-type").map(String::as_str) == Some("exception") {
                let kind = f
                    .headers
                    .get(":exception-type")
                    .cloned()
                    .unwrap_or_default();
                let status = match kind.as_str() {
                    "throttlingException" => StatusCode::TOO_MANY_REQUESTS,
                    "validationException" => StatusCode::BAD_REQUEST,
                    "serviceUnavailableException" => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let m = v["message"].as_str().unwrap_or("bedrock stream error");
                self.chunks.error(&mut out, status, &format!("{kind}: {m}"));
                self.done = true;
                continue;
            }
            match f.headers.get(":event-type").map(String::as_str) {
                Some("messageStart") => self.chunks.delta(&mut out, json!({"content": ""})),
                Some("contentBlockStart") => {
                    let u = &v["start"]["toolUse"];
                    let index = v["contentBlockIndex"].as_u64().unwrap_or(0);
                    if u.is_object() {
                        if u["name"] == JSON_TOOL {
                            self.json_tool = true;
                            self.tools.push((index, None));
                        } else {
                            let i = self.next_tool;
                            self.next_tool += 1;
                            self.tools.push((index, Some(i)));
                            self.chunks.delta(
                                &mut out,
                                json!({"tool_calls": [{"index": i, "id": u["toolUseId"],
                                    "type": "function",
                                    "function": {"name": u["name"], "arguments": ""}}]}),
                            );
                        }
                    }
                }
                Some("contentBlockDelta") => {
                    let d = &v["delta"];
                    let index = v["contentBlockIndex"].as_u64().unwrap_or(0);
                    if let Some(t) = d["text"].as_str() {
                        self.chunks.delta(&mut out, json!({"content": t}));
                    } else if let Some(t) = d["reasoningContent"]["text"].as_str() {
                        self.chunks.delta(&mut out, json!({"reasoning_content": t}));
                    } else if let Some(part) = d["toolUse"]["input"].as_str() {
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
                }
                Some("messageStop") => {
                    self.stop = v["stopReason"].as_str().map(str::to_string);
                }
                Some("metadata") => {
                    self.done = true;
                    let f = finish(self.stop.as_deref(), self.json_tool);
                    self.chunks.end(&mut out, f, Some(usage_of(&v["usage"])));
                }
                _ => {} // contentBlockStop
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.done {
            match &self.stop {
                // Ended without its metadata event: finish without usage (billed by estimate).
                Some(s) => {
                    let f = finish(Some(s), self.json_tool);
                    self.chunks.end(&mut out, f, None);
                }
                None => self.chunks.error(
                    &mut out,
                    StatusCode::BAD_GATEWAY,
                    "bedrock's stream ended before messageStop",
                ),
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One eventstream message with string headers (for tests and fakes).
    pub(crate) fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        for (k, v) in headers {
            h.push(k.len() as u8);
            h.extend_from_slice(k.as_bytes());
            h.push(7);
            h.extend_from_slice(&(v.len() as u16).to_be_bytes());
            h.extend_from_slice(v.as_bytes());
        }
        let total = (16 + h.len() + payload.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&total.to_be_bytes());
        m.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m.extend_from_slice(&h);
        m.extend_from_slice(payload);
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m
    }

    #[test]
    fn sigv4_matches_awss_published_example() {
        // AWS's "create a signed request" example (IAM ListUsers, 2015-08-30).
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let auth = sign(&Signing {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            payload: b"",
            region: "us-east-1",
            service: "iam",
            amz_date: "20150830T123600Z",
            key_id: "AKIDEXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn model_ids_with_colons_are_encoded_in_the_path() {
        assert_eq!(
            uri_encode("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
    }

    #[test]
    fn chat_requests_become_converse_with_tools_and_results() {
        let body = json!({"model": "m", "max_tokens": 20, "top_k": 5,
            "messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "w", "arguments": "{\"c\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "{\"t\": -3}"}],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "auto"});
        let r = request(&body).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r["system"][0]["text"], "Be brief.");
        assert_eq!(r["inferenceConfig"]["maxTokens"], 20);
        assert_eq!(r["additionalModelRequestFields"]["top_k"], 5);
        assert_eq!(
            r["messages"][1]["content"][0]["toolUse"]["input"]["c"],
            "Oslo"
        );
        assert_eq!(
            r["messages"][2]["content"][0]["toolResult"]["content"][0]["json"]["t"],
            -3
        );
        assert_eq!(
            r["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
            "object"
        );
        assert!(r["toolConfig"]["toolChoice"]["auto"].is_object());
        let link = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        assert!(request(&link).is_err(), "bedrock takes no image links");
    }

    #[test]
    fn event_streams_decode_and_translate_with_usage() {
        let mut bytes = Vec::new();
        let ev = |t: &str, p: Value| {
            frame(
                &[
                    (":event-type", t),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                p.to_string().as_bytes(),
            )
        };
        bytes.extend(ev("messageStart", json!({"role": "assistant"})));
        bytes.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ));
        bytes.extend(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}),
        ));
        bytes.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1,
            "delta": {"toolUse": {"input": "{\"c\":1}"}}}),
        ));
        bytes.extend(ev("messageStop", json!({"stopReason": "tool_use"})));
        bytes.extend(ev(
            "metadata",
            json!({"usage": {"inputTokens": 5, "outputTokens": 2,
            "cacheReadInputTokens": 3}, "metrics": {"latencyMs": 10}}),
        ));
        let mut s = Stream::new("m");
        let mut out = Vec::new();
        for piece in bytes.chunks(5) {
            out.extend(s.feed(piece).unwrap_or_else(|e| panic!("{e}")));
        }
        out.extend(s.finish());
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.contains("\"content\":\"Hi\""), "{text}");
        assert!(text.contains("\"arguments\":\"{\\\"c\\\":1}\""), "{text}");
        assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
        assert!(text.contains("\"prompt_tokens\":8"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));

        let mut bad = frame(&[(":event-type", "messageStart")], b"{}");
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(frames(&mut bad).is_err(), "a corrupt message is refused");
        let mut ex = frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"Too many requests"}"#,
        );
        let mut s = Stream::new("m");
        let out = String::from_utf8(s.feed(&std::mem::take(&mut ex)).unwrap_or_default())
            .unwrap_or_default();
        assert!(
            out.contains("throttlingException: Too many requests"),
            "{out}"
        );
        assert!(out.contains("rate_limit_error"), "{out}");
    }
}
