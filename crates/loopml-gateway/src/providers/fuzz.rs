//! Property and fuzz tests of the provider translations (OpenAI ⇄ Anthropic, Gemini, Bedrock,
//! Azure, OpenAI-compatible) and of the gateway config parser: requests from the committed
//! corpus (`tests/corpus/chat_requests.jsonl`), mutated, and arbitrary JSON go through every
//! adapter's `prepare`; upstream answers, error bodies and streams (the SSE corpus
//! `tests/corpus/upstream_streams.txt` and Bedrock's binary eventstream, cut anywhere and
//! mutated) go back through `answer`, `error` and the stream translators. The outcome is a
//! translation or a clean refusal, never a panic.

use futures::StreamExt;
use loopml_store::testing::mutate;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::GatewayConfig;

const REQUESTS: &str = include_str!("../../tests/corpus/chat_requests.jsonl");
const STREAMS: &str = include_str!("../../tests/corpus/upstream_streams.txt");

fn deployments() -> Vec<Deployment> {
    let yaml = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/gpt-4o, api_key: k}
  - model_name: b
    litellm_params: {model: anthropic/claude-sonnet-4, api_key: k}
  - model_name: c
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: k}
  - model_name: d
    litellm_params: {model: bedrock/anthropic.claude-3, aws_access_key_id: A, aws_secret_access_key: S, aws_region_name: us-east-1}
  - model_name: e
    litellm_params: {model: azure/gpt-4o, api_base: "https://x.openai.azure.com", api_key: k, api_version: "2024-10-21"}
  - model_name: f
    litellm_params: {model: hosted_vllm/llama, api_base: "http://10.0.0.1/v1"}
"#;
    GatewayConfig::parse(yaml, &|_| None)
        .expect("the fuzz config parses")
        .deployments
}

fn requests() -> Vec<Value> {
    REQUESTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus lines are JSON"))
        .collect()
}

/// Arbitrary JSON, up to a few levels deep, keyed like chat requests and answers.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "[ -~é☃]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "text",
            "image_url",
            "function",
            "auto",
            "none",
            "required",
            "json_object",
            "json_schema",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "model",
                        "messages",
                        "role",
                        "content",
                        "type",
                        "text",
                        "image_url",
                        "url",
                        "tools",
                        "function",
                        "name",
                        "parameters",
                        "arguments",
                        "tool_calls",
                        "tool_call_id",
                        "tool_choice",
                        "stop",
                        "max_tokens",
                        "stream",
                        "n",
                        "response_format",
                        "json_schema",
                        "schema",
                        "input",
                        "prompt",
                        "temperature",
                        "candidates",
                        "parts",
                        "usage",
                        "choices",
                        "delta",
                        "error",
                        "message",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// Every adapter's outbound and inbound translations of one request and one upstream body.
fn translate_everything(request: &Value, upstream: &[u8]) {
    for d in deployments() {
        let a = of(&d.provider);
        for path in ["chat/completions", "completions", "embeddings"] {
            for stream in [false, true] {
                let _ = a.prepare(&d, path, request, stream);
            }
            let _ = a.answer(&d, path, request, Bytes::copy_from_slice(upstream));
        }
        for status in [400u16, 401, 429, 500, 529] {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let _ = a.error(s, Bytes::copy_from_slice(upstream));
        }
    }
}

/// Every adapter's stream translator over `chunks`, drained to the end.
fn stream_everything(chunks: Vec<Vec<u8>>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    for d in deployments() {
        let a = of(&d.provider);
        let items: Vec<Result<Bytes, String>> =
            chunks.iter().map(|c| Ok(Bytes::from(c.clone()))).collect();
        let upstream: ByteStream = futures::stream::iter(items).boxed();
        let out = a.stream(&d, upstream);
        rt.block_on(async move {
            let _ = out.collect::<Vec<_>>().await;
        });
    }
}

/// Splits `b` at the given points (a stream arrives in arbitrary pieces).
fn pieces(b: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (b.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at {
        out.push(b[prev..c].to_vec());
        prev = c;
    }
    out.push(b[prev..].to_vec());
    out
}

fn eventstream(events: &[(&str, &str)]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|(kind, payload)| {
            bedrock::tests::frame(
                &[(":event-type", kind), (":message-type", "event")],
                payload.as_bytes(),
            )
        })
        .collect()
}

#[test]
fn the_corpus_translates_for_every_provider() {
    let reqs = requests();
    assert!(reqs.len() >= 12);
    let answer = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    for r in &reqs {
        translate_everything(r, answer);
    }
    // The well-formed chat requests translate for Anthropic.
    let d = deployments();
    let anthropic = d.iter().find(|d| d.model_name == "b").expect("b");
    let ok = reqs
        .iter()
        .filter(|r| {
            of(&anthropic.provider)
                .prepare(anthropic, "chat/completions", r, false)
                .is_ok()
        })
        .count();
    assert!(ok >= 6, "{ok}");
    stream_everything(vec![STREAMS.as_bytes().to_vec()]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_and_answers_never_panic(req in json_value(), answer in json_value()) {
        translate_everything(&req, answer.to_string().as_bytes());
    }

    #[test]
    fn mutated_corpus_requests_never_panic(
        pick in any::<prop::sample::Index>(),
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8),
    ) {
        let lines: Vec<&str> = REQUESTS.lines().filter(|l| !l.trim().is_empty()).collect();
        let bytes = mutate(lines[pick.index(lines.len())].as_bytes(), &ops);
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            translate_everything(&v, &bytes);
        } else {
            translate_everything(&json!({"model": "m"}), &bytes);
        }
    }

    #[test]
    fn streams_cut_and_mutated_never_panic(
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..6),
    ) {
        let sse = mutate(STREAMS.as_bytes(), &ops);
        let binary = mutate(&eventstream(&[
            ("messageStart", r#"{"role":"assistant"}"#),
            ("contentBlockDelta", r#"{"delta":{"text":"hi"},"contentBlockIndex":0}"#),
            ("messageStop", r#"{"stopReason":"end_turn"}"#),
            ("metadata", r#"{"usage":{"inputTokens":3,"outputTokens":1}}"#),
        ]), &ops);
        stream_everything(pieces(&sse, &cuts));
        stream_everything(pieces(&binary, &cuts));
        let mut buf = binary;
        let _ = bedrock::frames(&mut buf);
    }

    #[test]
    fn gateway_configs_never_panic(
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..12),
    ) {
        let seed = b"model_list:\n  - model_name: a\n    litellm_params: {model: openai/gpt-4o, api_key: os.environ/KEY, rpm: 10}\nrouter_settings:\n  routing_strategy: least-busy\n  num_retries: 2\n  fallbacks: [{a: [b]}]\ngeneral_settings:\n  master_key: sk-1\n";
        let text = String::from_utf8_lossy(&mutate(seed, &ops)).into_owned();
        let _ = GatewayConfig::parse(&text, &|_| Some("v".into()));
    }
}
