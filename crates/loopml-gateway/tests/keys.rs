//! Virtual keys, teams and users through LiteLLM's management API, and what they buy: model
//! scoping, budgets that hold under 64 concurrent requests, RPM and parallel limits with their
//! headers, an abandoned stream billed from the upstream's usage, the spend log and report,
//! keys and spend surviving a restart (SQLite, and PostgreSQL when configured), and two
//! gateways sharing one Redis never allowing twice the RPM.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use loopml_gateway::{Gateway, GatewayConfig, Storage};
use loopml_store::testing::TestDatabase;
use serde_json::{Value, json};

/// A fake OpenAI upstream: answers after `delay`, usage 5 prompt + 3 completion tokens; a
/// stream sends its words `delay` apart, then the usage chunk when asked for.
#[derive(Clone)]
struct Upstream {
    delay: Duration,
    calls: Arc<AtomicUsize>,
    /// Streams that reached their end on the upstream side.
    finished: Arc<AtomicUsize>,
}

async fn upstream_chat(State(u): State<Upstream>, body: Bytes) -> Response {
    u.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let model = body["model"].as_str().unwrap_or("").to_string();
    if body["stream"] == true {
        let usage = body["stream_options"]["include_usage"] == true;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let delay = u.delay;
        let finished = u.finished.clone();
        tokio::runtime::Handle::current().spawn(async move {
            for (i, word) in ["one ", "two ", "three"].iter().enumerate() {
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": word})
                } else {
                    json!({"content": word})
                };
                let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
                // The upstream goes on generating after the client left (as real ones do);
                // a failed send only means nobody reads this chunk.
                let _ = tx.send(Ok(Bytes::from(format!("data: {chunk}\n\n")))).await;
                tokio::time::sleep(delay).await;
            }
            let end = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            let _ = tx.send(Ok(Bytes::from(format!("data: {end}\n\n")))).await;
            if usage {
                let u = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
                let _ = tx.send(Ok(Bytes::from(format!("data: {u}\n\n")))).await;
            }
            let done = tx.send(Ok(Bytes::from("data: [DONE]\n\n"))).await;
            if done.is_ok() {
                finished.fetch_add(1, Ordering::SeqCst);
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        return (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    tokio::time::sleep(u.delay).await;
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
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

async fn upstream(delay: Duration) -> (String, Upstream) {
    let u = Upstream {
        delay,
        calls: Arc::default(),
        finished: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(upstream_chat))
        .with_state(u.clone());
    (serve(app).await, u)
}

/// Prices: $0.001 a prompt token, $0.002 a completion token, so one answer (5 + 3) costs
/// $0.011 and a request with `max_tokens: 3` is reserved at about $0.0155.
fn config(upstream: &str) -> GatewayConfig {
    let text = format!(
        r#"
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-test, api_base: "{upstream}/v1"}}
    model_info: {{id: chat-1, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
  - model_name: other
    litellm_params: {{model: openai/gpt-other, api_base: "{upstream}/v1"}}
    model_info: {{input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
general_settings: {{master_key: sk-master}}
"#
    );
    GatewayConfig::parse(&text, &|_| None).unwrap()
}

/// JSON request bodies without reqwest's `json` feature (the workspace leaves it off).
trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

async fn json_of(r: reqwest::Response) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&r.text().await.unwrap_or_default())
}

/// A client of one gateway.
#[derive(Clone)]
struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    async fn admin(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth("sk-master")
            .json_body(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, json_of(r).await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, json_of(r).await.unwrap_or(Value::Null))
    }

    async fn chat(&self, key: &str, model: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .json_body(&json!({"model": model, "max_tokens": 3,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }

    /// A new key with `body`'s fields; answers the raw key.
    async fn key(&self, body: Value) -> String {
        let (s, k) = self.admin("/key/generate", body).await;
        assert_eq!(s, 200, "{k}");
        k["key"].as_str().unwrap().to_string()
    }
}

async fn gateway(g: Gateway) -> Client {
    let app = loopml_gateway::router(g.clone()).merge(loopml_gateway::metrics_router(g));
    Client {
        url: serve(app).await,
        http: reqwest::Client::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_managed_through_litellms_api_and_scope_models() {
    let (up, _) = upstream(Duration::ZERO).await;
    let c = gateway(Gateway::new(config(&up)).unwrap()).await;

    // Only the master key manages keys.
    let (s, e) = c.admin("/key/generate", json!({"models": ["nope"]})).await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("nope"),
        "{e}"
    );
    let (s, e) = c.admin("/key/generate", json!({"max_budgget": 1})).await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_budgget"),
        "{e}"
    );
    let (s, k) = c
        .admin(
            "/key/generate",
            json!({"models": ["chat"], "key_alias": "ci", "metadata": {"owner": "ana"},
                "max_budget": 5.0, "budget_duration": "30d", "rpm_limit": 100}),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    let raw = k["key"].as_str().unwrap().to_string();
    assert!(raw.starts_with("sk-") && raw.len() >= 20, "{raw}");
    let token = k["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64, "stored by its sha-256");
    assert_ne!(token, raw);
    let r = c
        .http
        .post(format!("{}/key/generate", c.url))
        .bearer_auth(&raw)
        .json_body(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());

    // The key calls its models and no other; /v1/models lists only its models.
    let r = c.chat(&raw, "chat").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-loopml-overhead-ms"));
    assert!(r.headers().contains_key("x-litellm-response-cost"));
    let r = c.chat(&raw, "other").await;
    assert_eq!(r.status(), 401);
    let e: Value = json_of(r).await.unwrap();
    assert_eq!(e["error"]["code"], "key_model_access_denied", "{e}");
    let (_, models) = c.get("/v1/models", &raw).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat"]);

    // Info by the raw key, by its hash, and the key's own; the raw key is never shown again.
    let (s, info) = c.get(&format!("/key/info?key={raw}"), "sk-master").await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["info"]["key_alias"], "ci");
    assert_eq!(info["info"]["max_budget"], 5.0);
    assert_eq!(info["info"]["rpm_limit"], 100);
    assert_eq!(info["info"]["metadata"]["owner"], "ana");
    assert!(info["info"]["spend"].as_f64().unwrap() > 0.0, "{info}");
    let (s, own) = c.get("/key/info", &raw).await;
    assert_eq!(s, 200);
    assert_eq!(own["info"]["token"], token);
    let (s, list) = c
        .get("/key/list?return_full_object=true", "sk-master")
        .await;
    assert_eq!(s, 200, "{list}");
    assert!(
        !list.to_string().contains(&raw),
        "a listed key shows its hash only"
    );
    assert!(list.to_string().contains(&token));

    // Update widens its models; block and unblock; delete revokes it at once.
    let (s, u) = c
        .admin(
            "/key/update",
            json!({"key": raw, "models": ["chat", "other"]}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(c.chat(&raw, "other").await.status(), 200);
    let (s, _) = c.admin("/key/block", json!({"key": raw})).await;
    assert_eq!(s, 200);
    assert_eq!(c.chat(&raw, "chat").await.status(), 401);
    let (s, _) = c.admin("/key/unblock", json!({"key": raw})).await;
    assert_eq!(s, 200);
    assert_eq!(c.chat(&raw, "chat").await.status(), 200);
    let (s, d) = c.admin("/key/delete", json!({"key_aliases": ["ci"]})).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(c.chat(&raw, "chat").await.status(), 401);
    let (s, _) = c.get(&format!("/key/info?key={raw}"), "sk-master").await;
    assert_eq!(s, 404);

    // An expired key is refused; a team's models bound its keys.
    let (s, t) = c
        .admin(
            "/team/new",
            json!({"team_alias": "research", "models": ["other"]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let team = t["team_id"].as_str().unwrap().to_string();
    let k = c.key(json!({"team_id": team})).await;
    assert_eq!(c.chat(&k, "other").await.status(), 200);
    let r = c.chat(&k, "chat").await;
    assert_eq!(r.status(), 401);
    let e: Value = json_of(r).await.unwrap();
    assert_eq!(e["error"]["code"], "team_model_access_denied", "{e}");
    let (s, e) = c
        .admin("/key/generate", json!({"team_id": "no-such-team"}))
        .await;
    assert_eq!(s, 400, "{e}");
    let k = c.key(json!({"duration": "1s"})).await;
    assert_eq!(c.chat(&k, "chat").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.chat(&k, "chat").await.status(), 401);

    // A user made with a key; the user's info shows it.
    let (s, u) = c
        .admin("/user/new", json!({"user_id": "ana", "max_budget": 1.0}))
        .await;
    assert_eq!(s, 200, "{u}");
    let user_key = u["key"].as_str().unwrap().to_string();
    assert_eq!(c.chat(&user_key, "chat").await.status(), 200);
    let (s, info) = c.get("/user/info?user_id=ana", "sk-master").await;
    assert_eq!(s, 200, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_holds_under_64_concurrent_requests() {
    let (up, u) = upstream(Duration::from_millis(30)).await;
    let c = gateway(Gateway::new(config(&up)).unwrap()).await;
    // Key level: $0.1 buys nine answers at $0.011 at most.
    let key = c.key(json!({"max_budget": 0.1})).await;
    let burst = |key: String| {
        let c = c.clone();
        async move {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let c = c.clone();
                    let key = key.clone();
                    async move { c.chat(&key, "chat").await }
                })
                .collect();
            futures::future::join_all(tasks).await
        }
    };
    let mut ok = 0;
    let mut refused = 0;
    for round in 0..3 {
        for r in burst(key.clone()).await {
            match r.status().as_u16() {
                200 => ok += 1,
                400 => {
                    let e: Value = json_of(r).await.unwrap();
                    assert_eq!(e["error"]["type"], "budget_exceeded", "{e}");
                    assert!(
                        e["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("Budget has been exceeded")
                    );
                    refused += 1;
                }
                s => panic!("round {round}: unexpected status {s}"),
            }
        }
    }
    let spent = ok as f64 * 0.011;
    // Never past the cap by more than one request's estimate ($0.0155).
    assert!(spent <= 0.1 + 0.0155 + 1e-9, "{ok} answered: ${spent}");
    assert!(ok >= 8, "the budget was used: {ok} answered");
    assert_eq!(ok + refused, 192);
    assert_eq!(
        u.calls.load(Ordering::SeqCst),
        ok,
        "refusals never reach the upstream"
    );
    let (_, info) = c.get(&format!("/key/info?key={key}"), "sk-master").await;
    let spend = info["info"]["spend"].as_f64().unwrap();
    assert!((spend - spent).abs() < 1e-9, "{spend} vs {spent}");

    // Team level: two keys share one team budget.
    let (_, t) = c.admin("/team/new", json!({"max_budget": 0.05})).await;
    let team = t["team_id"].as_str().unwrap().to_string();
    let a = c.key(json!({"team_id": team})).await;
    let b = c.key(json!({"team_id": team})).await;
    let (ra, rb) = futures::future::join(burst(a), burst(b)).await;
    let ok = ra
        .iter()
        .chain(rb.iter())
        .filter(|r| r.status() == 200)
        .count();
    assert!(ok as f64 * 0.011 <= 0.05 + 0.0155 + 1e-9, "{ok} answered");
    assert!(ok >= 3, "{ok}");
    let (_, info) = c
        .get(&format!("/team/info?team_id={team}"), "sk-master")
        .await;
    let spend = info["team_info"]["spend"]
        .as_f64()
        .or(info["spend"].as_f64())
        .unwrap_or_else(|| panic!("{info}"));
    assert!((spend - ok as f64 * 0.011).abs() < 1e-9, "{info}");

    // Raising the budget lets the key spend again.
    let (s, _) = c
        .admin("/key/update", json!({"key": key, "max_budget": 1.0}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(c.chat(&key, "chat").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_and_parallel_limits_answer_429_with_retry_after_and_ratelimit_headers() {
    let (up, _) = upstream(Duration::from_millis(200)).await;
    let c = gateway(Gateway::new(config(&up)).unwrap()).await;
    let key = c.key(json!({"rpm_limit": 5})).await;
    let rs = futures::future::join_all((0..12).map(|_| c.chat(&key, "chat"))).await;
    let ok: Vec<_> = rs.iter().filter(|r| r.status() == 200).collect();
    assert_eq!(
        ok.len(),
        5,
        "exactly the rpm: {:?}",
        rs.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    let h = ok[0].headers();
    assert_eq!(h["x-ratelimit-limit-requests"], "5");
    assert!(h.contains_key("x-ratelimit-remaining-requests"));
    let refused: Vec<_> = rs.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(refused.len(), 7);
    let h = refused[0].headers();
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");

    let key = c.key(json!({"max_parallel_requests": 2})).await;
    let rs = futures::future::join_all((0..6).map(|_| c.chat(&key, "chat"))).await;
    assert_eq!(rs.iter().filter(|r| r.status() == 200).count(), 2);
    // Once they finished, the slots are free again.
    assert_eq!(c.chat(&key, "chat").await.status(), 200);

    let key = c.key(json!({"tpm_limit": 25})).await;
    // Each request counts its prompt (~8) and max_tokens (3): the second fits, the third not.
    let statuses: Vec<u16> = futures::future::join_all((0..3).map(|_| c.chat(&key, "chat")))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stream_is_billed_from_the_upstreams_usage() {
    let (up, u) = upstream(Duration::from_millis(150)).await;
    let g = Gateway::new(config(&up)).unwrap();
    let c = gateway(g.clone()).await;
    let key = c.key(json!({})).await;
    let mut r = c
        .http
        .post(format!("{}/v1/chat/completions", c.url))
        .bearer_auth(&key)
        .json_body(&json!({"model": "chat", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));
    drop(r); // the client leaves after the first word
    // The gateway reads the rest of the upstream's stream to its usage chunk and bills it.
    let mut waited = 0;
    let log = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
        let (_, logs) = c
            .get(&format!("/spend/logs?api_key={key}"), "sk-master")
            .await;
        if let Some(row) = logs.as_array().and_then(|a| a.first()) {
            break row.clone();
        }
        assert!(waited < 50, "never billed");
    };
    assert_eq!(
        u.finished.load(Ordering::SeqCst),
        1,
        "the upstream stream was read to its end"
    );
    assert_eq!(log["prompt_tokens"], 5, "{log}");
    assert_eq!(log["completion_tokens"], 3, "{log}");
    assert!(
        (log["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9,
        "{log}"
    );
    assert_eq!(log["metadata"]["stream"], true);
    let (_, info) = c.get(&format!("/key/info?key={key}"), "sk-master").await;
    assert!((info["info"]["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_is_logged_reported_and_counted_on_metrics() {
    let (up, _) = upstream(Duration::ZERO).await;
    let c = gateway(Gateway::new(config(&up)).unwrap()).await;
    let (_, t) = c.admin("/team/new", json!({"team_alias": "a"})).await;
    let team = t["team_id"].as_str().unwrap().to_string();
    let a = c.key(json!({"team_id": team, "key_alias": "a1"})).await;
    let b = c.key(json!({"key_alias": "b1"})).await;
    for _ in 0..3 {
        assert_eq!(c.chat(&a, "chat").await.status(), 200);
    }
    assert_eq!(c.chat(&b, "other").await.status(), 200);
    let (s, logs) = c
        .get(&format!("/spend/logs?api_key={a}"), "sk-master")
        .await;
    assert_eq!(s, 200, "{logs}");
    let rows = logs.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["model_group"], "chat");
        assert_eq!(row["model_id"], "chat-1");
        assert_eq!(row["team_id"], team.as_str());
        assert_eq!(row["status"], "success");
        assert_eq!(row["total_tokens"], 8);
        assert!(
            row["messages"].is_null(),
            "bodies are not stored unless asked"
        );
    }
    let (s, all) = c.get("/spend/logs", "sk-master").await;
    assert_eq!(s, 200);
    assert_eq!(all.as_array().unwrap().len(), 4);
    let (s, report) = c
        .get("/global/spend/report?group_by=api_key", "sk-master")
        .await;
    assert_eq!(s, 200, "{report}");
    let text = report.to_string();
    assert!(text.contains("chat") && text.contains("other"), "{text}");
    let (s, e) = c
        .get("/global/spend/report?group_by=planet", "sk-master")
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, _) = c.get("/spend/logs", &a).await;
    assert!(
        matches!(s, 401 | 403),
        "a virtual key cannot read every key's spend"
    );

    let m = c
        .http
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("loopml_gateway_requests_total"), "{m}");
    assert!(m.contains("loopml_gateway_overhead_seconds_bucket"), "{m}");
    assert!(m.contains("loopml_gateway_spend_usd_total"), "{m}");
    assert!(m.contains("loopml_gateway_tokens_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_spend_survive_a_restart() {
    let (up, _) = upstream(Duration::ZERO).await;
    for db in TestDatabase::all() {
        let storage = || Storage {
            database: Some(db.open_another()),
            redis_url: None,
            bus: None,
        };
        let g = Gateway::open(config(&up), storage()).await.unwrap();
        let c = gateway(g.clone()).await;
        let key = c
            .key(json!({"max_budget": 0.05, "key_alias": "kept"}))
            .await;
        for _ in 0..2 {
            assert_eq!(c.chat(&key, "chat").await.status(), 200);
        }
        g.flush().await;

        // A new process on the same database: the key, its spend and its log are there.
        let g2 = Gateway::open(config(&up), storage()).await.unwrap();
        let c2 = gateway(g2.clone()).await;
        let (s, info) = c2.get(&format!("/key/info?key={key}"), "sk-master").await;
        assert_eq!(s, 200, "{info}");
        assert_eq!(info["info"]["key_alias"], "kept");
        let spend = info["info"]["spend"].as_f64().unwrap();
        assert!((spend - 0.022).abs() < 1e-9, "{info}");
        let (_, logs) = c2
            .get(&format!("/spend/logs?api_key={key}"), "sk-master")
            .await;
        assert_eq!(logs.as_array().unwrap().len(), 2, "{logs}");
        // The budget carries on from the stored spend: admitted while under $0.05, so three
        // more answers ($0.055 in all, within one estimate of the cap), then refusals.
        let mut ok = 0;
        for _ in 0..5 {
            if c2.chat(&key, "chat").await.status() == 200 {
                ok += 1;
            }
        }
        assert_eq!(ok, 3);

        // Without Redis, a replica still sees another's delete within its poll (2 s).
        tokio::runtime::Handle::current().spawn(g2.clone().run_background());
        let other = c.key(json!({})).await;
        assert_eq!(c2.chat(&other, "chat").await.status(), 200);
        let (s, _) = c.admin("/key/delete", json!({"keys": [other]})).await;
        assert_eq!(s, 200);
        let started = std::time::Instant::now();
        while c2.chat(&other, "chat").await.status() != 401 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "B still accepts a deleted key"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_never_allow_twice_the_rpm() {
    let Ok(url) = std::env::var("LOOPML_TEST_REDIS_URL") else {
        eprintln!("skipped: LOOPML_TEST_REDIS_URL is not set (scripts/test.sh starts Redis)");
        return;
    };
    let (up, u) = upstream(Duration::from_millis(20)).await;
    let db = TestDatabase::new();
    // Each replica has a bus of its own (a replica ignores its own notes).
    let storage = || Storage {
        database: Some(db.open_another()),
        redis_url: Some(url.clone()),
        bus: Some(loopml_store::ChangeBus::redis(&url).unwrap()),
    };
    let ga = Gateway::open(config(&up), storage()).await.unwrap();
    let gb = Gateway::open(config(&up), storage()).await.unwrap();
    let rt = tokio::runtime::Handle::current();
    rt.spawn(ga.clone().run_background());
    rt.spawn(gb.clone().run_background());
    let (a, b) = (gateway(ga.clone()).await, gateway(gb.clone()).await);
    let key = a.key(json!({"rpm_limit": 10, "max_budget": 0.3})).await;
    // B learns of the key from the database on first sight.
    let both = |n: usize| {
        let (a, b, key) = (a.clone(), b.clone(), key.clone());
        async move {
            let calls = (0..n).map(|i| {
                let c = if i % 2 == 0 { a.clone() } else { b.clone() };
                let key = key.clone();
                async move { c.chat(&key, "chat").await.status().as_u16() }
            });
            futures::future::join_all(calls).await
        }
    };
    let statuses = both(30).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "one rpm across both replicas: {statuses:?}");
    assert_eq!(u.calls.load(Ordering::SeqCst), 10);
    // Spend is shared too: B sees what A's calls spent.
    let (_, ia) = a.get(&format!("/key/info?key={key}"), "sk-master").await;
    let (_, ib) = b.get(&format!("/key/info?key={key}"), "sk-master").await;
    assert_eq!(ia["info"]["spend"], ib["info"]["spend"], "{ia} {ib}");
    assert!(
        (ib["info"]["spend"].as_f64().unwrap() - 0.11).abs() < 1e-9,
        "{ib}"
    );
    // A key deleted on A is refused on B.
    let (s, _) = a.admin("/key/delete", json!({"keys": [key]})).await;
    assert_eq!(s, 200);
    let mut refused = false;
    for _ in 0..40 {
        if b.chat(&key, "chat").await.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "B still accepts a key deleted on A");
    ga.flush().await;
    gb.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_logged_only_when_asked_and_without_credentials() {
    let (up, _) = upstream(Duration::ZERO).await;
    let text = format!(
        "model_list:\n  - model_name: chat\n    litellm_params: {{model: openai/gpt-test, api_base: \"{up}/v1\"}}\n\
         general_settings: {{master_key: sk-master, store_prompts_in_spend_logs: true}}\n"
    );
    let c = gateway(Gateway::new(GatewayConfig::parse(&text, &|_| None).unwrap()).unwrap()).await;
    let r = c
        .http
        .post(format!("{}/v1/chat/completions", c.url))
        .bearer_auth("sk-master")
        .json_body(&json!({"model": "chat", "messages": [{"role": "user",
            "content": "use sk-live-0123456789abcdefghij please"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, logs) = c.get("/spend/logs", "sk-master").await;
    let row = &logs[0];
    let asked = row["messages"]["messages"][0]["content"].as_str().unwrap();
    assert_eq!(asked, "use [REDACTED] please");
    assert_eq!(row["response"]["choices"][0]["message"]["content"], "hi");
}
