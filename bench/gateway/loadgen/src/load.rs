//! Open-loop, constant-rate load (`load`), plus `check` and `ready`.
//!
//! Request i is due at t0 + i/rate. One OS thread sleeps until each due time and hands the
//! request to the Tokio runtime, whatever is still in flight (open loop: a slow server gets more
//! concurrent requests, not fewer). Latency is measured from the due time to the last byte of the
//! body (and to its first byte), so time a request spent waiting because this generator or the
//! server fell behind is counted. The HTTP/1.1 client keeps connections alive (TCP_NODELAY) and
//! opens new ones when all are busy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::procs;
use crate::{Args, Res};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(c)
}

fn chat_body(model: &str, stream: bool) -> Bytes {
    let mut v = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 16,
    });
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    Bytes::from(v.to_string())
}

/// What one request came to. Times are nanoseconds after t0.
#[derive(Clone, Default)]
struct Rec {
    i: u64,
    due: u64,
    sent: u64,
    first: u64,
    done: u64,
    status: u16,
    err: Option<String>,
    overhead_ms: Option<f64>,
}

struct Ctx {
    client: HttpClient,
    uri: hyper::Uri,
    auth: String,
    body: Bytes,
    stream: bool,
    timeout: Duration,
    t0: Instant,
    inflight: AtomicU64,
    recs: Mutex<Vec<Rec>>,
}

fn ns(t0: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(t0).as_nanos() as u64
}

async fn exchange(ctx: &Ctx, rec: &mut Rec) -> Result<(), String> {
    let req = Request::post(ctx.uri.clone())
        .header("authorization", &ctx.auth)
        .header("content-type", "application/json")
        .body(Full::new(ctx.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let resp = ctx.client.request(req).await.map_err(|e| {
        let mut s = format!("send: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s.push_str(&format!(": {x}"));
            src = x.source();
        }
        s
    })?;
    rec.status = resp.status().as_u16();
    // The gateway's own account of its time: loopml's header, else LiteLLM's.
    rec.overhead_ms = ["x-loopml-overhead-ms", "x-litellm-overhead-duration-ms"]
        .iter()
        .find_map(|h| resp.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok());
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| format!("body: {e}"))?;
        if let Some(d) = f.data_ref()
            && !d.is_empty()
        {
            if rec.first == 0 {
                rec.first = ns(ctx.t0, Instant::now());
            }
            buf.extend_from_slice(d);
        }
    }
    rec.done = ns(ctx.t0, Instant::now());
    if rec.status != 200 {
        let text = String::from_utf8_lossy(&buf[..buf.len().min(200)]).replace('\n', " ");
        return Err(format!("http_{}: {text}", rec.status));
    }
    let ok = if ctx.stream {
        let tail = &buf[buf.len().saturating_sub(64)..];
        tail.windows(6).any(|w| w == b"[DONE]")
    } else {
        buf.windows(9).any(|w| w == b"\"choices\"")
    };
    if !ok {
        return Err(if ctx.stream {
            "incomplete: stream without data: [DONE]".into()
        } else {
            "incomplete: answer without choices".into()
        });
    }
    Ok(())
}

async fn fire(ctx: Arc<Ctx>, i: u64, due: u64) {
    let mut rec = Rec {
        i,
        due,
        sent: ns(ctx.t0, Instant::now()),
        ..Rec::default()
    };
    match tokio::time::timeout(ctx.timeout, exchange(&ctx, &mut rec)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => rec.err = Some(e),
        Err(_) => rec.err = Some(format!("timeout after {:?}", ctx.timeout)),
    }
    if rec.done == 0 {
        rec.done = ns(ctx.t0, Instant::now());
    }
    if let Ok(mut v) = ctx.recs.lock() {
        v.push(rec);
    }
    ctx.inflight.fetch_sub(1, Ordering::Relaxed);
}

fn pct(v: &mut [u64]) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_unstable();
    let n = v.len();
    let at = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1e6;
    let r = |x: f64| (x * 1e3).round() / 1e3;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1e6;
    json!({"n": n, "p50": r(at(0.50)), "p90": r(at(0.90)), "p99": r(at(0.99)),
           "p999": r(at(0.999)), "max": r(v[n - 1] as f64 / 1e6), "mean": r(mean)})
}

/// `name=pid,name=pid` → watched process trees.
fn watches(a: &Args) -> Res<Vec<(String, u32)>> {
    let Some(s) = a.0.get("watch") else {
        return Ok(vec![]);
    };
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (n, p) = x.split_once('=').ok_or_else(|| format!("--watch: '{x}' is not name=pid"))?;
            let p = p.parse().map_err(|_| format!("--watch: bad pid in '{x}'"))?;
            Ok((n.to_string(), p))
        })
        .collect()
}

struct Watched {
    name: String,
    root: u32,
    pids: Vec<u32>,
    cpu0: f64,
    peak_rss_kb: u64,
    peak_hwm_kb: u64,
    procs: u64,
}

/// Samples RSS of the watched trees every 100 ms (the trees themselves once a second) until
/// `stop`; takes the CPU baseline when the measured window opens.
fn sampler(
    mut w: Vec<Watched>,
    window_start: Instant,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(Vec<Watched>, f64, (u64, u64))> {
    thread::spawn(move || {
        let mut self0 = None;
        let mut mach0 = (0, 0);
        for tick in 0u64.. {
            if tick % 10 == 0 {
                for x in w.iter_mut() {
                    x.pids = procs::tree(x.root);
                }
            }
            if self0.is_none() && Instant::now() >= window_start {
                for x in w.iter_mut() {
                    x.pids = procs::tree(x.root);
                    x.cpu0 = procs::tree_cpu_s(&x.pids);
                }
                self0 = Some(procs::cpu_s("self"));
                mach0 = procs::machine_jiffies();
            }
            for x in w.iter_mut() {
                let m = procs::mem_of(&x.pids);
                x.peak_rss_kb = x.peak_rss_kb.max(m.rss_kb);
                x.peak_hwm_kb = x.peak_hwm_kb.max(m.hwm_kb);
                x.procs = x.procs.max(m.procs);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        (w, self0.unwrap_or(0.0), mach0)
    })
}

pub fn run(a: &Args) -> Res<Value> {
    let base = a.str("url")?;
    let key = a.str("key")?;
    let model = a.str_or("model", "bench");
    let rate = a.f64_or("rate", 100.0)?;
    let duration = a.f64_or("duration-s", 10.0)?;
    let warmup = a.f64_or("warmup-s", 2.0)?;
    let stream = a.u64_or("stream", 0)? == 1;
    let timeout = Duration::from_secs_f64(a.f64_or("timeout-s", 10.0)?);
    let max_inflight = a.u64_or("max-inflight", 10_000)?;
    let threads = a.u64_or("threads", 2)?.max(1) as usize;
    if rate <= 0.0 || duration <= 0.0 || warmup < 0.0 {
        return Err("--rate and --duration-s must be > 0, --warmup-s >= 0".into());
    }
    let uri: hyper::Uri = format!("{}/v1/chat/completions", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("--url: {e}"))?;
    let watched: Vec<Watched> = watches(a)?
        .into_iter()
        .map(|(name, root)| Watched {
            name,
            root,
            pids: vec![root],
            cpu0: 0.0,
            peak_rss_kb: 0,
            peak_hwm_kb: 0,
            procs: 0,
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let total = ((warmup + duration) * rate).round() as u64;
    let warm_n = (warmup * rate).round() as u64;
    let period = 1e9 / rate;
    let t0 = Instant::now() + Duration::from_millis(100);
    let ctx = Arc::new(Ctx {
        client: rt.block_on(async { client() }),
        uri,
        auth: format!("Bearer {key}"),
        body: chat_body(&model, stream),
        stream,
        timeout,
        t0,
        inflight: AtomicU64::new(0),
        recs: Mutex::new(Vec::with_capacity(total as usize)),
    });
    let window_start = t0 + Duration::from_nanos((warm_n as f64 * period) as u64);
    let stop = Arc::new(AtomicBool::new(false));
    let samp = sampler(watched, window_start, stop.clone());

    // The schedule. Requests over --max-inflight are not sent and count as errors ("dropped").
    let mut dropped: Vec<Rec> = Vec::new();
    let h = rt.handle().clone();
    for i in 0..total {
        let due_ns = (i as f64 * period) as u64;
        let due = t0 + Duration::from_nanos(due_ns);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if ctx.inflight.load(Ordering::Relaxed) >= max_inflight {
            dropped.push(Rec {
                i,
                due: due_ns,
                err: Some(format!("dropped: {max_inflight} requests already in flight")),
                ..Rec::default()
            });
            continue;
        }
        ctx.inflight.fetch_add(1, Ordering::Relaxed);
        h.spawn(fire(ctx.clone(), i, due_ns));
    }
    let sched_end = Instant::now();
    // Drain: every request either finishes or times out.
    let deadline = Instant::now() + timeout + Duration::from_secs(2);
    while ctx.inflight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let unfinished = ctx.inflight.load(Ordering::Relaxed);
    let drain_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let (watched, self0, mach0) = samp.join().map_err(|_| "sampler thread panicked")?;
    let self_cpu = procs::cpu_s("self") - self0;
    let mach1 = procs::machine_jiffies();
    let cpu_window_s = drain_end.saturating_duration_since(window_start).as_secs_f64();

    let mut recs = ctx.recs.lock().map_err(|_| "poisoned")?.clone();
    recs.extend(dropped);
    // Answered with 200, warm-up included: what the gateway should have billed.
    let ok_all = recs.iter().filter(|r| r.err.is_none()).count();
    recs.retain(|r| r.i >= warm_n);
    let sent = recs.len() as u64 + unfinished;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_errs: Vec<String> = Vec::new();
    let (mut lat, mut ttfb, mut svc, mut lag, mut ovh) = (vec![], vec![], vec![], vec![], vec![]);
    let mut last_done = 0u64;
    for r in &recs {
        if let Some(e) = &r.err {
            let kind = e.split(':').next().unwrap_or("error").to_string();
            *by_kind.entry(kind).or_default() += 1;
            if first_errs.len() < 5 {
                first_errs.push(e.chars().take(300).collect());
            }
            continue;
        }
        last_done = last_done.max(r.done);
        lat.push(r.done - r.due);
        ttfb.push(r.first.max(r.sent) - r.due);
        svc.push(r.done - r.sent);
        lag.push(r.sent.saturating_sub(r.due));
        if let Some(o) = r.overhead_ms {
            ovh.push((o * 1e6) as u64);
        }
    }
    if unfinished > 0 {
        *by_kind.entry("unfinished".into()).or_default() += unfinished;
    }
    let ok = lat.len() as u64;
    let errors = sent - ok;
    let wstart_ns = (warm_n as f64 * period) as u64;
    let span_s = (last_done.saturating_sub(wstart_ns)) as f64 / 1e9;
    let achieved = if span_s > 0.0 { ok as f64 / span_s } else { 0.0 };
    let r3 = |x: f64| (x * 1e3).round() / 1e3;
    let mut cpu = serde_json::Map::new();
    for w in &watched {
        let alive = std::path::Path::new(&format!("/proc/{}", w.root)).exists();
        // A tree whose processes exited loses their CPU time from the sum: no figure then.
        let used = (procs::tree_cpu_s(&procs::tree(w.root)) - w.cpu0).max(0.0);
        cpu.insert(
            w.name.clone(),
            json!({
                "exited": !alive,
                "cpu_s": r3(used),
                "cpu_us_per_ok": if ok > 0 { (used * 1e6 / ok as f64 * 10.0).round() / 10.0 } else { 0.0 },
                "peak_rss_kb": w.peak_rss_kb,
                "peak_hwm_kb": w.peak_hwm_kb,
                "procs": w.procs,
            }),
        );
    }
    let busy = (mach1.0.saturating_sub(mach0.0)) as f64 / 100.0;
    let watched_cpu: f64 = cpu.values().filter_map(|v| v["cpu_s"].as_f64()).sum();
    let other = (busy - watched_cpu - self_cpu).max(0.0);
    Ok(json!({
        "target_rps": rate,
        "stream": stream,
        "duration_s": duration,
        "warmup_s": warmup,
        "timeout_s": timeout.as_secs_f64(),
        "sent": sent,
        "ok": ok,
        "ok_with_warmup": ok_all,
        "errors": {"count": errors, "by_kind": by_kind, "first": first_errs},
        "error_rate": if sent > 0 { r3(errors as f64 / sent as f64 * 100.0) / 100.0 } else { 0.0 },
        "achieved_rps": (achieved * 10.0).round() / 10.0,
        "latency_ms": pct(&mut lat),
        "ttfb_ms": pct(&mut ttfb),
        "service_ms": pct(&mut svc),
        "send_lag_ms": pct(&mut lag),
        "overhead_header_ms": pct(&mut ovh),
        "schedule_s": r3(sched_end.saturating_duration_since(t0).as_secs_f64()),
        "cpu_window_s": r3(cpu_window_s),
        "processes": cpu,
        "loadgen_cpu_s": r3(self_cpu),
        "machine_busy_cores": if cpu_window_s > 0.0 { r3(busy / cpu_window_s) } else { 0.0 },
        // CPU that neither the watched trees nor this generator used: other processes, and the
        // kernel's interrupt work (loopback softirqs land here too).
        "other_cores": if cpu_window_s > 0.0 { r3(other / cpu_window_s) } else { 0.0 },
    }))
}

// ---------------------------------------------------------------------------------------------
// check: one JSON and one streamed request through a gateway, validated

async fn get_full(
    c: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<(u16, hyper::HeaderMap, Vec<u8>), String> {
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, headers, body))
}

fn post(base: &str, key: &str, body: Bytes) -> Res<Request<Full<Bytes>>> {
    Request::post(format!("{}/v1/chat/completions", base.trim_end_matches('/')))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())
}

fn loopml_headers(h: &hyper::HeaderMap) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in h {
        let k = k.as_str();
        if k.starts_with("x-loopml-") || k.starts_with("x-litellm-") {
            m.insert(k.into(), json!(v.to_str().unwrap_or("")));
        }
    }
    Value::Object(m)
}

pub fn check(a: &Args) -> Res<Value> {
    let base = a.str("url")?;
    let key = a.str("key")?;
    let model = a.str_or("model", "bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let c = client();
        let (st, h, b) = get_full(&c, post(&base, &key, chat_body(&model, false))?).await?;
        let text = String::from_utf8_lossy(&b).to_string();
        if st != 200 {
            return Err(format!("JSON request: HTTP {st}: {text}"));
        }
        let v: Value = serde_json::from_slice(&b).map_err(|e| format!("JSON request: {e}: {text}"))?;
        let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_string();
        let tokens = v["usage"]["total_tokens"].as_u64().unwrap_or(0);
        if content.is_empty() || tokens == 0 {
            return Err(format!("JSON request: no content or usage: {text}"));
        }
        let json_headers = loopml_headers(&h);

        let (st, h, b) = get_full(&c, post(&base, &key, chat_body(&model, true))?).await?;
        let text = String::from_utf8_lossy(&b).to_string();
        if st != 200 {
            return Err(format!("stream request: HTTP {st}: {text}"));
        }
        let (mut events, mut done, mut streamed, mut usage) = (0, false, String::new(), Value::Null);
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim();
            events += 1;
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let ev: Value = serde_json::from_str(data).map_err(|e| format!("stream event {events}: {e}: {data}"))?;
            if let Some(s) = ev["choices"][0]["delta"]["content"].as_str() {
                streamed.push_str(s);
            }
            if ev["usage"].is_object() {
                usage = ev["usage"].clone();
            }
        }
        if !done || streamed.is_empty() {
            return Err(format!("stream request: no content or no [DONE]: {text}"));
        }
        Ok(json!({
            "json": {"content": content, "total_tokens": tokens, "headers": json_headers},
            "stream": {"events": events, "content": streamed, "usage": usage, "headers": loopml_headers(&h)},
        }))
    })
}

pub fn ready(a: &Args) -> Res<Value> {
    let base = a.str("url")?;
    let path = a.str_or("path", "/health");
    let key = a.0.get("key").cloned();
    let timeout = Duration::from_secs_f64(a.f64_or("timeout-s", 120.0)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let c = client();
        let t0 = Instant::now();
        let mut last = String::new();
        let mut tries = 0u64;
        while t0.elapsed() < timeout {
            tries += 1;
            let mut b = Request::get(format!("{}{}", base.trim_end_matches('/'), path));
            if let Some(k) = &key {
                b = b.header("authorization", format!("Bearer {k}"));
            }
            let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(5), get_full(&c, req)).await {
                Ok(Ok((200, _, _))) => {
                    return Ok(json!({"ready_s": crate::since_s(t0), "tries": tries}));
                }
                Ok(Ok((st, _, b))) => last = format!("HTTP {st}: {}", String::from_utf8_lossy(&b)),
                Ok(Err(e)) => last = e,
                Err(_) => last = "timeout".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{base}{path} not ready after {timeout:?} ({tries} tries; last: {last})"))
    })
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1_000_000).collect();
        let p = pct(&mut v);
        assert_eq!(p["p50"], 50.0);
        assert_eq!(p["p99"], 99.0);
        assert_eq!(p["max"], 100.0);
    }
}
