//! The fake OpenAI upstream: `POST …/chat/completions` answers after `--delay-ms` with a
//! chat.completion (usage included) or, for `"stream": true`, an SSE stream: a role chunk,
//! `--chunks` content chunks, a finish chunk, a usage chunk when
//! `stream_options.include_usage` is set, then `data: [DONE]`. The delay is the time to the
//! response headers (the first byte); stream chunks follow `--chunk-gap-ms` apart (0: at once,
//! each its own body frame). `GET /stats` tells how many requests it answered.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{Args, Res};

const WORDS: [&str; 8] = ["Hello", " from", " the", " fake", " upstream", ",", " again", "."];
const PROMPT_TOKENS: u64 = 12;

struct Cfg {
    delay: Duration,
    chunks: usize,
    gap: Duration,
    json: AtomicU64,
    stream: AtomicU64,
    bad: AtomicU64,
}

/// A response body: one buffer, frames queued at once, or frames sent by a task.
pub enum UpBody {
    Full(Option<Bytes>),
    Queue(VecDeque<Bytes>),
    Chan(mpsc::Receiver<Bytes>),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = |b: Option<Bytes>| b.map(|b| Ok(Frame::data(b)));
        match self.get_mut() {
            UpBody::Full(b) => Poll::Ready(frame(b.take())),
            UpBody::Queue(q) => Poll::Ready(frame(q.pop_front())),
            UpBody::Chan(rx) => rx.poll_recv(cx).map(frame),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Full(b) => b.is_none(),
            UpBody::Queue(q) => q.is_empty(),
            UpBody::Chan(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response<UpBody> {
    let mut r = Response::new(UpBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("static header"));
    r
}

fn completion(id: u64, model: &str, chunks: usize) -> String {
    let content: String = (0..chunks).map(|i| WORDS[i % WORDS.len()]).collect();
    json!({
        "id": format!("chatcmpl-bench-{id}"),
        "object": "chat.completion",
        "created": crate::unix_s(),
        "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks,
                  "total_tokens": PROMPT_TOKENS + chunks as u64},
    })
    .to_string()
}

fn sse_frames(id: u64, model: &str, chunks: usize, usage: bool) -> VecDeque<Bytes> {
    let created = crate::unix_s();
    let chunk = |choices: Value, extra: Option<Value>| {
        let mut v = json!({
            "id": format!("chatcmpl-bench-{id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": choices,
        });
        if let Some(u) = extra {
            v["usage"] = u;
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut q = VecDeque::with_capacity(chunks + 4);
    q.push_back(chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}]),
        None,
    ));
    for i in 0..chunks {
        q.push_back(chunk(
            json!([{"index": 0, "delta": {"content": WORDS[i % WORDS.len()]},
                    "logprobs": null, "finish_reason": null}]),
            None,
        ));
    }
    q.push_back(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        None,
    ));
    if usage {
        q.push_back(chunk(
            json!([]),
            Some(json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks,
                        "total_tokens": PROMPT_TOKENS + chunks as u64})),
        ));
    }
    q.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    q
}

async fn handle(cfg: Arc<Cfg>, req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        return Ok(match path.as_str() {
            "/health" | "/v1/health" => json_response(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/stats" => json_response(
                StatusCode::OK,
                json!({"json": cfg.json.load(Ordering::Relaxed),
                       "stream": cfg.stream.load(Ordering::Relaxed),
                       "bad": cfg.bad.load(Ordering::Relaxed)})
                .to_string(),
            ),
            "/v1/models" | "/models" => json_response(
                StatusCode::OK,
                r#"{"object":"list","data":[{"id":"gpt-bench","object":"model","owned_by":"bench"}]}"#
                    .into(),
            ),
            _ => not_found(),
        });
    }
    if req.method() != Method::POST || !path.ends_with("/chat/completions") {
        return Ok(not_found());
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(bad(&cfg, "cannot read the body")),
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return Ok(bad(&cfg, "body is not JSON"));
    };
    let model = v["model"].as_str().unwrap_or("gpt-bench").to_string();
    let stream = v["stream"].as_bool().unwrap_or(false);
    let usage = v["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    tokio::time::sleep(cfg.delay).await;
    if !stream {
        let n = cfg.json.fetch_add(1, Ordering::Relaxed);
        return Ok(json_response(StatusCode::OK, completion(n, &model, cfg.chunks)));
    }
    let n = cfg.stream.fetch_add(1, Ordering::Relaxed);
    let frames = sse_frames(n, &model, cfg.chunks, usage);
    let body = if cfg.gap.is_zero() {
        UpBody::Queue(frames)
    } else {
        let (tx, rx) = mpsc::channel(frames.len());
        let gap = cfg.gap;
        tokio::spawn(async move {
            for (i, f) in frames.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                if tx.send(f).await.is_err() {
                    break;
                }
            }
        });
        UpBody::Chan(rx)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("content-type", "text/event-stream".parse().expect("static header"));
    h.insert("cache-control", "no-cache".parse().expect("static header"));
    Ok(r)
}

fn not_found() -> Response<UpBody> {
    json_response(
        StatusCode::NOT_FOUND,
        r#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#.into(),
    )
}

fn bad(cfg: &Cfg, msg: &str) -> Response<UpBody> {
    cfg.bad.fetch_add(1, Ordering::Relaxed);
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": null}})
            .to_string(),
    )
}

pub fn run(a: &Args) -> Res<Value> {
    let host = a.str_or("host", "127.0.0.1");
    let port = a.u64_or("port", 0)?;
    let threads = a.u64_or("threads", 1)?.max(1) as usize;
    let cfg = Arc::new(Cfg {
        delay: Duration::from_secs_f64(a.f64_or("delay-ms", 20.0)? / 1e3),
        chunks: a.u64_or("chunks", 5)?.max(1) as usize,
        gap: Duration::from_secs_f64(a.f64_or("chunk-gap-ms", 0.0)? / 1e3),
        json: AtomicU64::new(0),
        stream: AtomicU64::new(0),
        bad: AtomicU64::new(0),
    });
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(format!("{host}:{port}"))
            .await
            .map_err(|e| format!("bind {host}:{port}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{}", json!({"event": "listening", "url": format!("http://{addr}")}));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    eprintln!("upstream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(cfg.clone(), req));
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
