//! Load generator for `bench/tracking`: drives any MLflow-compatible tracking server over plain
//! HTTP/1.1 on loopback (keep-alive, TCP_NODELAY, one connection per client thread) and prints
//! one JSON object per command on stdout. Progress and errors go to stderr.
//!
//! Commands (see `usage()`): ingest, search, history, ready, settle, rss, freeport; for
//! `bench/registry`: registry-populate, registry-query (in `registry.rs`); for `bench/serving`:
//! infer (in `infer.rs`); auth-overhead (in `auth.rs`).
//! Latencies are HTTP round trips (request written → response body fully read); JSON parsing
//! of responses in this process is outside the timed span.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

mod auth;
mod infer;
mod registry;

type Res<T> = Result<T, String>;

fn usage() -> &'static str {
    "usage: loadgen <command> [--flag value]...
  ingest   --url U[,U2..] [--clients 8] [--runs 200] [--steps 20] [--metrics 50] [--watch-pid P]
           [--deadline-s S]   (stop early after S seconds; the result is marked partial)
  search   --url U[,U2..] [--runs 2000] [--queries 100] [--populate-threads 8] [--watch-pid P]
  history  --url U [--points 100000] [--reps 20] [--watch-pid P]
  registry-populate --url U [--models 1000] [--versions 20] [--clients 8] [--watch-pid P]
  registry-query    --url U [--models 1000] [--versions 20] [--queries 500] [--clients 8]
           [--conc-queries 250] [--broad-queries 50] [--warmup 16] [--watch-pid P]
  infer    --url U --rows FILE.json [--format oip|mlflow|mlflow-inputs] [--model NAME] [--input features]
           [--columns f0,f1,..] [--concurrency 1] [--duration-s 10] [--warmup-s 2]
           [--timeout-s 60] [--watch-pid P]   (batch-1 requests: OIP v2 or MLflow /invocations)
  auth-overhead --off U --on U --admin-auth AUTH --user-auth AUTH [--requests 2000]
           [--rounds 5] [--warmup 200]   (the same server without and with logins, interleaved)
  ready    --url U [--path /health] [--since-ns N] [--timeout-s 120]
  settle   --pid P [--max-s 60]   (wait until the process tree is idle: <10% of a core for 1 s)
  rss      --pid P
  freeport"
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!("{}", usage());
        std::process::exit(2);
    };
    let args = match Args::parse(&argv[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}\n{}", usage());
            std::process::exit(2);
        }
    };
    let result = match cmd.as_str() {
        "ingest" => ingest(&args),
        "search" => search(&args),
        "history" => history(&args),
        "registry-populate" => registry::populate(&args),
        "registry-query" => registry::query(&args),
        "infer" => infer::infer(&args),
        "auth-overhead" => auth::overhead(&args),
        "ready" => ready(&args),
        "settle" => settle(&args),
        "rss" => args.u32("pid").map(|pid| {
            let m = tree_mem(pid);
            json!({"rss_kb": m.rss_kb, "pss_kb": m.pss_kb, "procs": m.procs})
        }),
        "freeport" => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| json!({"port": a.port()}))
            .map_err(|e| e.to_string()),
        _ => Err(format!("unknown command {cmd:?}\n{}", usage())),
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen {cmd}: {e}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments

struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Res<Self> {
        let mut m = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            m.insert(key.to_string(), v.clone());
        }
        Ok(Args(m))
    }
    fn str(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("missing --{k}"))
    }
    fn usize_or(&self, k: &str, d: usize) -> Res<usize> {
        match self.0.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: not a number: {v:?}")),
        }
    }
    fn f64_or(&self, k: &str, d: f64) -> Res<f64> {
        match self.0.get(k) {
            None => Ok(d),
            Some(v) => v
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("--{k}: not a number: {v:?}")),
        }
    }
    fn u32(&self, k: &str) -> Res<u32> {
        self.str(k)?
            .parse()
            .map_err(|_| format!("--{k}: not a number"))
    }
    fn opt_u32(&self, k: &str) -> Res<Option<u32>> {
        self.0
            .get(k)
            .map(|v| v.parse().map_err(|_| format!("--{k}: not a number")))
            .transpose()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client: one ureq Agent (one keep-alive connection) per thread.

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        // No global/per-call timeout: with one set, ureq resolves the host on a fresh thread for
        // every request (even pooled ones). Phase timeouts bound a stuck server just as well.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_send_body(Some(Duration::from_secs(120)))
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .proxy(None)
            .no_delay(true)
            .max_idle_connections_per_host(2)
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{}", self.base, path)
    }

    /// POST JSON; returns (round-trip seconds, status, body).
    fn post_raw(&self, path: &str, body: &Value) -> Res<(f64, u16, String)> {
        self.post_text(path, body.to_string())
    }

    fn post_text(&self, path: &str, payload: String) -> Res<(f64, u16, String)> {
        let t = Instant::now();
        let mut resp = self
            .agent
            .post(&self.api(path))
            .header("Content-Type", "application/json")
            .send(payload)
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 31)
            .read_to_string()
            .map_err(|e| format!("POST {path}: reading body: {e}"))?;
        Ok((t.elapsed().as_secs_f64(), status, text))
    }

    fn get_raw(&self, url: &str, query: &[(&str, &str)]) -> Res<(f64, u16, String)> {
        let t = Instant::now();
        let mut req = self.agent.get(url);
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 31)
            .read_to_string()
            .map_err(|e| format!("GET {url}: reading body: {e}"))?;
        Ok((t.elapsed().as_secs_f64(), status, text))
    }

    fn post(&self, path: &str, body: &Value) -> Res<(f64, Value)> {
        let (dt, status, text) = self.post_raw(path, body)?;
        Ok((dt, parse_ok(path, status, &text)?))
    }

    fn create_experiment(&self, prefix: &str) -> Res<String> {
        let name = format!("{prefix}-{}-{}", std::process::id(), now_ms());
        let (_, v) = self.post("experiments/create", &json!({"name": name}))?;
        str_field(&v, &["experiment_id"])
    }

    fn create_run(&self, experiment_id: &str, run_name: &str) -> Res<String> {
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": now_ms(),
            "tags": [{"key": "mlflow.runName", "value": run_name}],
        });
        let (_, v) = self.post("runs/create", &body)?;
        str_field(&v, &["run", "info", "run_id"])
            .or_else(|_| str_field(&v, &["run", "info", "run_uuid"]))
    }
}

fn parse_ok(what: &str, status: u16, text: &str) -> Res<Value> {
    if status != 200 {
        let snippet: String = text.chars().take(400).collect();
        return Err(format!("{what}: HTTP {status}: {snippet}"));
    }
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text).map_err(|e| format!("{what}: bad JSON ({e})"))
}

fn str_field(v: &Value, path: &[&str]) -> Res<String> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| format!("response lacks {}: {v}", path.join(".")))?;
    }
    cur.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not a string", path.join(".")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Deterministic value in [0, 1) for index `i` (Knuth multiplicative hash; a bijection on u32,
/// so distinct `i < 2^32` give distinct values).
fn unit(i: u64) -> f64 {
    ((i as u32).wrapping_mul(2_654_435_761) as f64) / 4_294_967_296.0
}

// ---------------------------------------------------------------------------------------------
// Statistics

fn summary(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let rank = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    json!({
        "n": n,
        "median_ms": ms(median),
        "p95_ms": ms(rank(0.95)),
        "p99_ms": ms(rank(0.99)),
        "min_ms": ms(v[0]),
        "max_ms": ms(v[n - 1]),
        "mean_ms": ms(v.iter().sum::<f64>() / n as f64),
    })
}

// ---------------------------------------------------------------------------------------------
// Memory of a process tree, from /proc

#[derive(Default, Clone, Copy)]
struct Mem {
    rss_kb: u64,
    pss_kb: u64,
    procs: u64,
}

fn proc_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the last ')' (the command name may contain spaces): state, ppid, …
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().copied());
        }
        i += 1;
    }
    out
}

fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

/// RSS (and, with `pss`, PSS) summed over `pids`. Reading `smaps_rollup` walks every mapping of
/// the process: ~100 ms of kernel CPU for mlflow's 15 processes, so PSS is never read while a
/// workload is being timed; `status` (VmRSS) costs well under 1 ms per sweep.
fn mem_of(pids: &[u32], pss: bool) -> Mem {
    let mut m = Mem::default();
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        m.procs += 1;
        m.rss_kb += kb_field(&status, "VmRSS:").unwrap_or(0);
        if pss && let Ok(r) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            m.pss_kb += kb_field(&r, "Pss:").unwrap_or(0);
        }
    }
    m
}

fn tree_mem(root: u32) -> Mem {
    mem_of(&proc_tree(root), true)
}

/// utime + stime of one process, in seconds (USER_HZ is 100 on Linux).
fn cpu_s(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // After the command name: state(3) ppid … utime(14) stime(15), i.e. indexes 11 and 12 here.
    (tick(11) + tick(12)) as f64 / 100.0
}

/// CPU seconds used so far by a process tree (live processes only).
fn tree_cpu_s(root: u32) -> f64 {
    proc_tree(root).iter().map(|p| cpu_s(&p.to_string())).sum()
}

/// Samples the memory of a process tree every 100 ms until stopped; keeps the peaks. Also
/// measures the CPU time the server tree and this load generator used in between.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Mem>>,
    pid: Option<u32>,
    server_cpu0: f64,
    self_cpu0: f64,
}

impl Sampler {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = pid.map(|pid| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut peak = Mem::default();
                let mut pids = proc_tree(pid);
                for tick in 1u64.. {
                    // RSS every 100 ms; the process tree (a scan of all of /proc) once a second.
                    if tick % 10 == 0 {
                        pids = proc_tree(pid);
                    }
                    let m = mem_of(&pids, false);
                    peak.rss_kb = peak.rss_kb.max(m.rss_kb);
                    peak.procs = peak.procs.max(m.procs);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                peak
            })
        });
        let server_cpu0 = pid.map_or(0.0, tree_cpu_s);
        Sampler {
            stop,
            handle,
            pid,
            server_cpu0,
            self_cpu0: cpu_s("self"),
        }
    }

    fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let server_cpu = self
            .pid
            .map(|p| ((tree_cpu_s(p) - self.server_cpu0) * 100.0).round() / 100.0);
        let self_cpu = ((cpu_s("self") - self.self_cpu0) * 100.0).round() / 100.0;
        match (self.handle.map(|h| h.join()), self.pid) {
            (Some(Ok(p)), Some(pid)) => {
                // One PSS sweep now that the timed work is over.
                let end = tree_mem(pid);
                json!({"peak_rss_kb": p.rss_kb, "procs": p.procs,
                       "end_rss_kb": end.rss_kb, "end_pss_kb": end.pss_kb,
                       "server_cpu_s": server_cpu, "loadgen_cpu_s": self_cpu})
            }
            _ => json!({"loadgen_cpu_s": self_cpu}),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Error accounting shared by worker threads

#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    /// Records an error; returns true when the caller should give up (too many errors).
    fn record(&self, e: String) -> bool {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut f) = self.first.lock()
            && f.len() < 5
        {
            eprintln!("loadgen: error: {e}");
            f.push(e);
        }
        n >= 100
    }
    fn to_json(&self) -> Value {
        let first = self.first.lock().map(|f| f.clone()).unwrap_or_default();
        json!({"count": self.count.load(Ordering::Relaxed), "first": first})
    }
}

// ---------------------------------------------------------------------------------------------
// (a) ingest: C clients × R runs × S steps, one log-batch of M metrics per step

/// `--url` may list several replicas of one server, comma-separated: clients take them in turn.
fn urls(a: &Args) -> Res<Vec<String>> {
    let raw = a.str("url")?;
    let urls: Vec<String> = raw.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect();
    if urls.is_empty() {
        return Err(format!("--url '{raw}' names no server"));
    }
    Ok(urls)
}

fn ingest(a: &Args) -> Res<Value> {
    let urls = urls(a)?;
    let url = urls[0].clone();
    let clients = a.usize_or("clients", 8)?;
    let runs = a.usize_or("runs", 200)?;
    let steps = a.usize_or("steps", 20)?;
    let metrics = a.usize_or("metrics", 50)?;
    let deadline = match a.usize_or("deadline-s", 0)? {
        0 => None,
        s => Some(Duration::from_secs(s as u64)),
    };
    let partial = Arc::new(AtomicBool::new(false));
    let exp = Client::new(&url).create_experiment("bench-ingest")?;
    let errors = Arc::new(Errors::default());
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    let keys: Arc<Vec<String>> = Arc::new((0..metrics).map(|k| format!("m{k}")).collect());
    eprintln!("ingest: {clients} clients × {runs} runs × {steps} batches × {metrics} metrics");

    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = urls[c % urls.len()].clone();
            let (exp, errors, keys) = (exp.clone(), errors.clone(), keys.clone());
            let partial = partial.clone();
            thread::spawn(move || {
                let cl = Client::new(&url);
                let mut lat = Vec::with_capacity(runs * steps);
                let mut other = Vec::with_capacity(runs * 2);
                'runs: for r in 0..runs {
                    let t = Instant::now();
                    let run_id = match cl.create_run(&exp, &format!("c{c}-r{r}")) {
                        Ok(id) => id,
                        Err(e) => {
                            if errors.record(e) {
                                break 'runs;
                            }
                            continue;
                        }
                    };
                    other.push(t.elapsed().as_secs_f64());
                    for s in 0..steps {
                        if deadline.is_some_and(|d| t0.elapsed() > d) {
                            partial.store(true, Ordering::Relaxed);
                            break 'runs;
                        }
                        // The hot path writes the JSON text directly (a serde_json::Value tree
                        // per batch costs more CPU than some servers spend on the request).
                        let ts = now_ms();
                        let mut body = String::with_capacity(64 + 80 * metrics);
                        let _ = write!(body, r#"{{"run_id":"{run_id}","metrics":["#);
                        for (k, key) in keys.iter().enumerate() {
                            let v = unit((((c * runs + r) * steps + s) * 64 + k) as u64);
                            let sep = if k == 0 { "" } else { "," };
                            let _ = write!(
                                body,
                                r#"{sep}{{"key":"{key}","value":{v},"timestamp":{ts},"step":{s}}}"#
                            );
                        }
                        body.push_str(r#"],"params":[],"tags":[]}"#);
                        let res =
                            cl.post_text("runs/log-batch", body)
                                .and_then(|(dt, st, text)| {
                                    parse_ok("runs/log-batch", st, &text).map(|_| dt)
                                });
                        match res {
                            Ok(dt) => lat.push(dt),
                            Err(e) => {
                                if errors.record(e) {
                                    break 'runs;
                                }
                            }
                        }
                    }
                    let body = json!({"run_id": run_id, "run_uuid": run_id,
                                      "status": "FINISHED", "end_time": now_ms()});
                    match cl.post("runs/update", &body) {
                        Ok((dt, _)) => other.push(dt),
                        Err(e) => {
                            if errors.record(e) {
                                break 'runs;
                            }
                        }
                    }
                }
                (lat, other)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut other = Vec::new();
    for h in handles {
        let (l, o) = h.join().map_err(|_| "ingest thread panicked".to_string())?;
        lat.extend(l);
        other.extend(o);
    }
    let wall = t0.elapsed().as_secs_f64();
    let mem = sampler.finish();
    let ok_batches = lat.len();
    Ok(json!({
        "workload": "ingest",
        "partial": partial.load(Ordering::Relaxed),
        "clients": clients, "replicas": urls.len(), "runs_per_client": runs, "steps": steps, "metrics_per_batch": metrics,
        "batches": ok_batches,
        "expected_batches": clients * runs * steps,
        "wall_s": (wall * 1e3).round() / 1e3,
        "batches_per_s": (ok_batches as f64 / wall * 10.0).round() / 10.0,
        "metrics_per_s": (ok_batches as f64 * metrics as f64 / wall).round(),
        "log_batch_latency": summary(lat),
        "create_update_latency": summary(other),
        "errors": errors.to_json(),
        "memory": mem,
    }))
}

// ---------------------------------------------------------------------------------------------
// (b) search: populate N runs (10 metrics, 10 params, 5 tags), then Q filtered+ordered searches

const SEARCH_FILTER: &str = "metrics.m1 > 0.5 AND params.p1 = 'x'";

/// Run `i` matches the filter iff `i` is even. Odd runs fail exactly one of the two clauses
/// (alternately), so both clauses do work.
fn search_run_values(i: usize) -> (f64, &'static str) {
    let u = unit(i as u64 * 31 + 7);
    if i.is_multiple_of(2) {
        (0.51 + 0.48 * u, "x")
    } else if (i / 2).is_multiple_of(2) {
        (0.51 + 0.48 * u, "y")
    } else {
        (0.01 + 0.48 * u, "x")
    }
}

fn search(a: &Args) -> Res<Value> {
    let urls = urls(a)?;
    let url = urls[0].clone();
    let runs = a.usize_or("runs", 2000)?;
    let queries = a.usize_or("queries", 100)?;
    let threads = a.usize_or("populate-threads", 8)?.max(1);
    let exp = Client::new(&url).create_experiment("bench-search")?;
    let errors = Arc::new(Errors::default());
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);

    eprintln!("search: populating {runs} runs with {threads} threads");
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = urls[t % urls.len()].clone();
            let (exp, errors) = (exp.clone(), errors.clone());
            thread::spawn(move || {
                let cl = Client::new(&url);
                let mut i = t;
                while i < runs {
                    let r = (|| -> Res<()> {
                        let run_id = cl.create_run(&exp, &format!("run-{i:05}"))?;
                        let (m1, p1) = search_run_values(i);
                        let ts = now_ms();
                        let metrics: Vec<Value> = (0..10)
                            .map(|k| {
                                let v = match k {
                                    1 => m1,
                                    2 => unit(i as u64),
                                    _ => unit((i * 10 + k) as u64 + 1_000_003),
                                };
                                json!({"key": format!("m{k}"), "value": v, "timestamp": ts, "step": 0})
                            })
                            .collect();
                        let params: Vec<Value> = (0..10)
                            .map(|k| {
                                let v = if k == 1 { p1.to_string() } else { format!("v{i}-{k}") };
                                json!({"key": format!("p{k}"), "value": v})
                            })
                            .collect();
                        let tags: Vec<Value> = (0..5)
                            .map(|k| json!({"key": format!("t{k}"), "value": format!("tag{k}-{}", i % 7)}))
                            .collect();
                        cl.post(
                            "runs/log-batch",
                            &json!({"run_id": run_id, "metrics": metrics, "params": params, "tags": tags}),
                        )?;
                        Ok(())
                    })();
                    if let Err(e) = r
                        && errors.record(e) {
                            break;
                        }
                    i += threads;
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "populate thread panicked".to_string())?;
    }
    let populate_s = t0.elapsed().as_secs_f64();
    if errors.count.load(Ordering::Relaxed) > 0 {
        return Err(format!("populate failed: {}", errors.to_json()));
    }

    let expected = runs.div_ceil(2);
    // With replicas, searched on the last one: what the others wrote must be visible there.
    let cl = Client::new(urls.last().unwrap_or(&url));
    let body = json!({
        "experiment_ids": [exp],
        "filter": SEARCH_FILTER,
        "run_view_type": "ACTIVE_ONLY",
        "max_results": 1000,
        "order_by": ["metrics.m2 DESC"],
    });
    eprintln!("search: {queries} queries");
    let mut lat = Vec::with_capacity(queries);
    let mut counts = Vec::with_capacity(queries);
    let mut first_page: Option<Value> = None;
    for _ in 0..queries {
        let (dt, status, text) = cl.post_raw("runs/search", &body)?;
        lat.push(dt);
        let v = parse_ok("runs/search", status, &text)?;
        counts.push(v.get("runs").and_then(Value::as_array).map_or(0, Vec::len));
        if first_page.is_none() {
            first_page = Some(v);
        }
    }
    let first_page = first_page.unwrap_or_else(|| json!({}));
    let page_runs = first_page
        .get("runs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = page_runs
        .iter()
        .map(|r| {
            r.pointer("/info/run_name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default()
        })
        .collect();
    let m2s: Vec<f64> = page_runs
        .iter()
        .map(|r| {
            r.pointer("/data/metrics")
                .and_then(Value::as_array)
                .and_then(|ms| ms.iter().find(|m| m.get("key") == Some(&json!("m2"))))
                .and_then(|m| m.get("value"))
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        })
        .collect();
    let order_ok = m2s.windows(2).all(|w| w[0] >= w[1]) && !m2s.iter().any(|x| x.is_nan());
    let all_match = names.iter().all(|n| {
        n.strip_prefix("run-")
            .and_then(|s| s.parse::<usize>().ok())
            .is_some_and(|i| i % 2 == 0)
    });
    // FNV-1a over the ordered run names: equal across servers iff they agree on the order.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in names.join(",").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }

    // Untimed: page through every match to count them all.
    let mut total = 0usize;
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut b = body.clone();
        if let Some(t) = &token {
            b["page_token"] = json!(t);
        }
        let (_, v) = cl.post("runs/search", &b)?;
        total += v.get("runs").and_then(Value::as_array).map_or(0, Vec::len);
        pages += 1;
        token = v
            .get("next_page_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() || pages > 1000 {
            break;
        }
    }
    let mem = sampler.finish();
    let page_count = counts.first().copied().unwrap_or(0);
    let consistent = counts.iter().all(|&c| c == page_count);
    Ok(json!({
        "workload": "search",
        "runs": runs, "queries": queries,
        "filter": SEARCH_FILTER, "order_by": ["metrics.m2 DESC"], "max_results": 1000,
        "populate_s": (populate_s * 1e3).round() / 1e3,
        "latency": summary(lat),
        "returned_runs": page_count,
        "total_matches": total,
        "expected_matches": expected,
        "pages_for_all_matches": pages,
        "order_hash": format!("{h:016x}"),
        "checks": {
            "count_ok": total == expected && page_count == expected.min(1000) && consistent,
            "order_ok": order_ok,
            "all_match": all_match,
        },
        "errors": errors.to_json(),
        "memory": mem,
    }))
}

// ---------------------------------------------------------------------------------------------
// (c) history: one metric with P points, fetched page by page (max_results=25000) R times

fn history(a: &Args) -> Res<Value> {
    let url = a.str("url")?;
    let points = a.usize_or("points", 100_000)?;
    let reps = a.usize_or("reps", 20)?;
    let cl = Client::new(&url);
    let exp = cl.create_experiment("bench-history")?;
    let run_id = cl.create_run(&exp, "history")?;
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    eprintln!("history: logging {points} points");
    let t0 = Instant::now();
    let base_ts = now_ms();
    let mut step = 0usize;
    while step < points {
        let end = (step + 1000).min(points);
        let ms: Vec<Value> = (step..end)
            .map(|s| {
                json!({"key": "loss", "value": 1.0 / (1.0 + s as f64) + 0.01 * unit(s as u64),
                            "timestamp": base_ts + s as u64, "step": s})
            })
            .collect();
        cl.post("runs/log-batch", &json!({"run_id": run_id, "metrics": ms}))?;
        step = end;
    }
    let log_s = t0.elapsed().as_secs_f64();

    let url_hist = cl.api("metrics/get-history");
    // Untimed warm-up: one small read per likely worker process, so that a multi-process server's
    // lazy per-worker set-up is not charged to the first timed fetches.
    for _ in 0..16 {
        let q = [
            ("run_uuid", run_id.as_str()),
            ("metric_key", "loss"),
            ("run_id", run_id.as_str()),
            ("max_results", "10"),
        ];
        let (_, status, text) = cl.get_raw(&url_hist, &q)?;
        parse_ok("metrics/get-history", status, &text)?;
    }
    eprintln!("history: {reps} fetches");
    let mut lat = Vec::with_capacity(reps);
    let mut pages_per_fetch = 0;
    let mut steps_ok = true;
    for rep in 0..reps {
        let mut total_dt = 0.0;
        let mut got = 0usize;
        let mut pages = 0usize;
        let mut token: Option<String> = None;
        let mut seen = if rep == 0 {
            vec![false; points]
        } else {
            Vec::new()
        };
        loop {
            let mut q: Vec<(&str, &str)> = vec![
                ("run_uuid", run_id.as_str()),
                ("metric_key", "loss"),
                ("run_id", run_id.as_str()),
                ("max_results", "25000"),
            ];
            if let Some(t) = &token {
                q.push(("page_token", t.as_str()));
            }
            let (dt, status, text) = cl.get_raw(&url_hist, &q)?;
            total_dt += dt;
            let v = parse_ok("metrics/get-history", status, &text)?;
            let ms = v
                .get("metrics")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            got += ms.len();
            if rep == 0 {
                for m in ms {
                    match m
                        .get("step")
                        .and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()))
                    {
                        Some(s) if (s as usize) < points => seen[s as usize] = true,
                        _ => steps_ok = false,
                    }
                }
            }
            pages += 1;
            token = v
                .get("next_page_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
            if pages > points / 1000 + 100 {
                return Err(format!("get-history: no end after {pages} pages"));
            }
        }
        if got != points {
            return Err(format!(
                "get-history returned {got} points, expected {points}"
            ));
        }
        if rep == 0 {
            steps_ok &= seen.iter().all(|&b| b);
        }
        pages_per_fetch = pages;
        lat.push(total_dt);
    }
    let mem = sampler.finish();
    Ok(json!({
        "workload": "history",
        "points": points, "reps": reps,
        "log_s": (log_s * 1e3).round() / 1e3,
        "pages_per_fetch": pages_per_fetch,
        "latency": summary(lat),
        "checks": {"points_ok": true, "steps_ok": steps_ok},
        "memory": mem,
    }))
}

// ---------------------------------------------------------------------------------------------
// Settle: some servers keep starting processes after their first 200 (mlflow's job consumers
// import mlflow for ~20 s on 2 cores). Timed work starts once the tree is idle.

fn settle(a: &Args) -> Res<Value> {
    let pid = a.u32("pid")?;
    let max = Duration::from_secs(a.usize_or("max-s", 60)? as u64);
    let t0 = Instant::now();
    let window = Duration::from_millis(500);
    let mut quiet = 0;
    let mut last = tree_cpu_s(pid);
    while t0.elapsed() < max {
        thread::sleep(window);
        let now = tree_cpu_s(pid);
        // Processes that exited drop out of the sum, so a negative delta counts as busy.
        let used = now - last;
        last = now;
        quiet = if (0.0..0.05).contains(&used) {
            quiet + 1
        } else {
            0
        };
        if quiet >= 2 {
            let ms = (t0.elapsed().as_secs_f64() * 1e3).round();
            return Ok(json!({"settled": true, "settle_ms": ms}));
        }
    }
    Ok(json!({"settled": false, "settle_ms": (max.as_secs_f64() * 1e3).round()}))
}

// ---------------------------------------------------------------------------------------------
// (d) readiness probe for cold start: poll until the first 200

fn ready(a: &Args) -> Res<Value> {
    let url = a.str("url")?;
    let path =
        a.0.get("path")
            .cloned()
            .unwrap_or_else(|| "/health".to_string());
    let timeout = Duration::from_secs(a.usize_or("timeout-s", 120)? as u64);
    let since_ns: Option<u128> =
        a.0.get("since-ns")
            .map(|s| {
                s.parse()
                    .map_err(|_| "--since-ns: not a number".to_string())
            })
            .transpose()?;
    let full = format!("{}{}", url.trim_end_matches('/'), path);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_recv_response(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .into();
    let t0 = Instant::now();
    let mut attempts = 0u64;
    let mut last;
    loop {
        attempts += 1;
        match agent.get(&full).call() {
            Ok(r) if r.status().as_u16() == 200 => break,
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "{full} not ready after {timeout:?} ({attempts} tries; last: {last})"
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let ms = match since_ns {
        Some(s) => now_ns.saturating_sub(s) as f64 / 1e6,
        None => t0.elapsed().as_secs_f64() * 1e3,
    };
    Ok(json!({"ready_ms": (ms * 10.0).round() / 10.0, "attempts": attempts, "path": path}))
}
