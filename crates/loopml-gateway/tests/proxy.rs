//! The gateway in front of fake OpenAI-compatible upstreams that speak the real wire format:
//! JSON answers and SSE streams (with the usage chunk), errors with their status, a deployment
//! that fails over to another, a group that falls back to another group, the master key.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use loopml_gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};

/// A fake upstream: answers as `name`, or fails with `fail` (a status) every time.
#[derive(Clone)]
struct Fake {
    name: &'static str,
    fail: Option<u16>,
    calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<(HeaderMap, Value)>>>,
}

async fn fake_chat(State(f): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    f.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap();
    f.seen.lock().unwrap().push((headers, body.clone()));
    if let Some(code) = f.fail {
        let status = StatusCode::from_u16(code).unwrap();
        return (
            status,
            [(header::RETRY_AFTER, "1")],
            json!({"error": {"message": format!("{} is down", f.name), "type": "server_error", "param": null, "code": null}}).to_string(),
        )
            .into_response();
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    if body["stream"].as_bool() == Some(true) {
        let mut sse = String::new();
        for (i, word) in ["Hello", " from ", f.name].iter().enumerate() {
            let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": if i == 0 { json!({"role": "assistant", "content": word}) } else { json!({"content": word}) }, "finish_reason": null}]});
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        let end = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        sse.push_str(&format!("data: {end}\n\n"));
        if body["stream_options"]["include_usage"] == true {
            let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
            sse.push_str(&format!("data: {usage}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        return ([(header::CONTENT_TYPE, "text/event-stream")], sse).into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hi from {}", f.name)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    }))
    .into_response()
}

/// Serves `app` on a free port for the rest of the test (the runtime ends with it).
#[allow(clippy::disallowed_methods)] // a test server, not app background work
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn fake(name: &'static str, fail: Option<u16>) -> (String, Fake) {
    let f = Fake {
        name,
        fail,
        calls: Arc::default(),
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(fake_chat))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(f.clone());
    (serve(app).await, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_openai_requests_with_failover_fallbacks_and_streams() {
    let (good, good_f) = fake("good", None).await;
    let (down, down_f) = fake("down", Some(503)).await;
    let (backup, backup_f) = fake("backup", None).await;
    let (bad, _) = fake("bad", Some(400)).await;
    let config = format!(
        r#"
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{down}/v1", api_key: sk-up, weight: 1000}}
    model_info: {{id: chat-down}}
  - model_name: chat
    litellm_params: {{model: hosted_vllm/llama, api_base: "{good}/v1", weight: 1}}
    model_info: {{id: chat-good}}
  - model_name: flaky
    litellm_params: {{model: openai/x, api_base: "{down}/v1"}}
  - model_name: spare
    litellm_params: {{model: openai/spare-model, api_base: "{backup}/v1"}}
  - model_name: strict
    litellm_params: {{model: openai/y, api_base: "{bad}/v1"}}
router_settings:
  num_retries: 1
  fallbacks: [{{"flaky": ["spare"]}}]
general_settings: {{master_key: sk-master}}
"#
    );
    let cfg = GatewayConfig::parse(&config, &|_| None).unwrap();
    let url = serve(loopml_gateway::router(Gateway::new(cfg).unwrap())).await;
    let client = reqwest::Client::new();
    let post = |body: Value, key: &str| {
        client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let msg = json!([{"role": "user", "content": "hi"}]);

    // The master key is required; errors are OpenAI-shaped.
    let r = post(json!({"model": "chat", "messages": msg}), "wrong")
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key", "{e}");
    let r = post(json!({"model": "nope", "messages": msg}), "sk-master")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat, flaky, spare, strict"),
        "{e}"
    );

    // The heavy deployment is down (503): the request fails over to the other one.
    let r = post(json!({"model": "chat", "messages": msg}), "sk-master")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-loopml-deployment"], "chat-good");
    assert!(
        r.headers()["x-loopml-overhead-ms"]
            .to_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 0.0
    );
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hi from good");
    assert_eq!(v["model"], "llama", "the upstream got its own model name");
    let (headers, body) = down_f.seen.lock().unwrap()[0].clone();
    assert_eq!(
        headers["authorization"], "Bearer sk-up",
        "the deployment's key goes upstream"
    );
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(good_f.calls.load(Ordering::SeqCst) >= 1);

    // A group whose only deployment is down falls back to another group.
    let r = post(json!({"model": "flaky", "messages": msg}), "sk-master")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-loopml-model-group"], "spare");
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hi from backup");
    assert_eq!(backup_f.calls.load(Ordering::SeqCst), 1);

    // An upstream's 400 is its answer: passed back, not retried.
    let r = post(json!({"model": "strict", "messages": msg}), "sk-master")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Streams are relayed chunk by chunk; usage is always asked for upstream.
    let r = post(
        json!({"model": "spare", "messages": msg, "stream": true}),
        "sk-master",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE.as_str()],
        "text/event-stream"
    );
    let text = r.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let words: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(words, "Hello from backup");
    // The client did not ask for usage: the usage chunk the gateway asked for is not passed on.
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null))
    );
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let last = backup_f.seen.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(last["stream_options"]["include_usage"], true);

    // A client that asks for usage gets the final usage chunk.
    let r = post(
        json!({"model": "spare", "messages": msg, "stream": true, "stream_options": {"include_usage": true}}),
        "sk-master",
    )
    .await
    .unwrap();
    let text = r.text().await.unwrap();
    let usage: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|c| c["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["total_tokens"], 8);

    // A long request (3 MB, past axum's 2 MB default) goes through.
    let long = "x".repeat(3 << 20);
    let r = post(
        json!({"model": "spare", "messages": [{"role": "user", "content": long}]}),
        "sk-master",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    // /v1/models lists the groups.
    let text = client
        .get(format!("{url}/v1/models"))
        .bearer_auth("sk-master")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "flaky", "spare", "strict"]);
    let r = client
        .get(format!("{url}/v1/models/nope"))
        .bearer_auth("sk-master")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deployment_cools_down_and_then_gets_a_429_with_retry_after() {
    let (down, down_f) = fake("down", Some(500)).await;
    let config = format!(
        "model_list:\n  - model_name: only\n    litellm_params: {{model: openai/x, api_base: \"{down}/v1\"}}\n\
         router_settings: {{num_retries: 0, allowed_fails: 1, cooldown_time: 30}}\n"
    );
    let cfg = GatewayConfig::parse(&config, &|_| None).unwrap();
    let url = serve(loopml_gateway::router(Gateway::new(cfg).unwrap())).await;
    let client = reqwest::Client::new();
    let ask = || {
        client
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(r#"{"model": "only", "messages": [{"role": "user", "content": "x"}]}"#)
            .send()
    };
    // Two failures (more than allowed_fails = 1): the upstream's own 500 both times.
    for _ in 0..2 {
        assert_eq!(ask().await.unwrap().status(), 500);
    }
    assert_eq!(down_f.calls.load(Ordering::SeqCst), 2);
    // Now it cools down: not called, and the client is told when to come back.
    let r = ask().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let e: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(e["error"]["code"], "deployments_cooling_down", "{e}");
    assert_eq!(
        down_f.calls.load(Ordering::SeqCst),
        2,
        "a cooling deployment is not called"
    );
}

async fn slow_chat(body: Bytes) -> Response {
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    axum::Json(json!({"id": "s", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "slow"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
    .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_sends_the_next_request_to_the_idle_deployment() {
    let slow = serve(Router::new().route("/v1/chat/completions", post(slow_chat))).await;
    let (fast, _) = fake("fast", None).await;
    let config = |strategy: &str| {
        format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/a, api_base: \"{slow}/v1\", weight: 100000}}\n    model_info: {{id: slow}}\n\
             \x20 - model_name: m\n    litellm_params: {{model: openai/b, api_base: \"{fast}/v1\", weight: 1}}\n    model_info: {{id: fast}}\n\
             router_settings: {{routing_strategy: {strategy}}}\n"
        )
    };
    for (strategy, second_goes_to) in [("least-busy", "fast"), ("simple-shuffle", "slow")] {
        let cfg = GatewayConfig::parse(&config(strategy), &|_| None).unwrap();
        let url = serve(loopml_gateway::router(Gateway::new(cfg).unwrap())).await;
        let client = reqwest::Client::new();
        let ask = || {
            client
                .post(format!("{url}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(r#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#)
                .send()
        };
        // The first request goes to the heavy (slow) deployment and is still in flight when the
        // second one is routed.
        let first = ask();
        let second = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            ask().await
        };
        let (a, b) = tokio::join!(first, second);
        assert_eq!(
            a.unwrap().headers()["x-loopml-deployment"],
            "slow",
            "{strategy}"
        );
        assert_eq!(
            b.unwrap().headers()["x-loopml-deployment"],
            second_goes_to,
            "{strategy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_cost_based_routing_pick_the_fast_and_the_cheap_deployment() {
    let slow = serve(Router::new().route("/v1/chat/completions", post(slow_chat))).await;
    let (fast, _) = fake("fast", None).await;
    let ask = |url: String| async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(r#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#)
            .send()
            .await
            .unwrap()
            .headers()["x-loopml-deployment"]
            .to_str()
            .unwrap()
            .to_string()
    };
    // Latency-based: once each was measured, the fast one takes every request.
    let cfg = format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/a, api_base: \"{slow}/v1\"}}\n    model_info: {{id: slow}}\n\
         \x20 - model_name: m\n    litellm_params: {{model: openai/b, api_base: \"{fast}/v1\"}}\n    model_info: {{id: fast}}\n\
         router_settings: {{routing_strategy: latency-based-routing}}\n"
    );
    let url = serve(loopml_gateway::router(
        Gateway::new(GatewayConfig::parse(&cfg, &|_| None).unwrap()).unwrap(),
    ))
    .await;
    let first_two = [ask(url.clone()).await, ask(url.clone()).await];
    assert!(first_two.contains(&"slow".to_string()) && first_two.contains(&"fast".to_string()));
    for _ in 0..5 {
        assert_eq!(ask(url.clone()).await, "fast");
    }
    // Cost-based: the cheaper deployment, whatever the weights.
    let cfg = format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/a, api_base: \"{fast}/v1\", weight: 1000}}\n    model_info: {{id: dear, input_cost_per_token: 0.00001, output_cost_per_token: 0.00003}}\n\
         \x20 - model_name: m\n    litellm_params: {{model: openai/b, api_base: \"{fast}/v1\", weight: 1}}\n    model_info: {{id: cheap, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}\n\
         router_settings: {{routing_strategy: cost-based-routing}}\n"
    );
    let url = serve(loopml_gateway::router(
        Gateway::new(GatewayConfig::parse(&cfg, &|_| None).unwrap()).unwrap(),
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(ask(url.clone()).await, "cheap");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_after_caps_a_groups_time_before_its_fallbacks() {
    let slow = serve(Router::new().route("/v1/chat/completions", post(slow_chat))).await;
    let (spare, _) = fake("spare", None).await;
    let cfg = format!(
        "model_list:\n  - model_name: main\n    litellm_params: {{model: openai/a, api_base: \"{slow}/v1\"}}\n    model_info: {{id: slow-1}}\n\
         \x20 - model_name: main\n    litellm_params: {{model: openai/a, api_base: \"{slow}/v1\"}}\n    model_info: {{id: slow-2}}\n\
         \x20 - model_name: spare\n    litellm_params: {{model: openai/b, api_base: \"{spare}/v1\"}}\n    model_info: {{id: spare}}\n\
         router_settings: {{num_retries: 3, fallback_after: 0.15, fallbacks: [{{main: [spare]}}]}}\n"
    );
    let url = serve(loopml_gateway::router(
        Gateway::new(GatewayConfig::parse(&cfg, &|_| None).unwrap()).unwrap(),
    ))
    .await;
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model": "main", "messages": [{"role": "user", "content": "x"}]}"#)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-loopml-deployment"], "spare");
    // Both slow deployments would take 800 ms; the cap moves on after 150 ms.
    assert!(took < std::time::Duration::from_millis(380), "{took:?}");
}
