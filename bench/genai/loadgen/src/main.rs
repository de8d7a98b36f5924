//! Load generator for `bench/genai`: replays requests prepared by `bench.py` (OTLP protobuf
//! span exports, StartTraceV3 bodies, trace reads, prompt reads) against an MLflow-compatible
//! server over plain HTTP/1.1 on loopback (keep-alive, TCP_NODELAY, one connection per client
//! thread), and prints one JSON object per command on stdout. Progress and errors go to stderr.
//!
//! The request file is a sequence of records, each `u32le header length, header JSON, u32le body
//! length, body`, the header being `{"unit": n, "method": "POST", "path": "/v1/traces",
//! "headers": [[k, v], ...], "label": "otlp", "expect": "substring"?}`. Consecutive records with
//! the same `unit` form one unit: requests one client sends in order (a trace's span export and
//! its StartTraceV3; or the calls `mlflow.get_trace` makes).
//!
//! Latencies are HTTP round trips (request written → response body fully read). Memory and CPU
//! of the server's process tree come from /proc (`--watch-pid`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type Res<T> = Result<T, String>;

fn usage() -> &'static str {
    "usage: genload <command> [--flag value]...
  replay  --url U --file F [--clients 8] [--deadline-s S] [--watch-pid P]
          (units taken in order by C concurrent clients; stops taking units after S seconds)
  seq     --url U --file F [--reps 100] [--warmup 10] [--watch-pid P] [--save-dir D]
          (the file's units in turn, one at a time; each unit timed as a whole)
  watch   --pid P --stop-file F   (samples the process tree until F exists)
  proc    --pid P                 (one snapshot: VmHWM, VmRSS, CPU of the tree)
  ready   --url U [--path /health] [--timeout-s 180]
  settle  --pid P [--max-s 60]    (until the tree uses <10% of a core for 1 s)
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
            eprintln!("genload: {e}\n{}", usage());
            std::process::exit(2);
        }
    };
    let result = match cmd.as_str() {
        "replay" => replay(&args),
        "seq" => seq(&args),
        "watch" => watch(&args),
        "proc" => args.u32("pid").map(|p| snapshot(p).to_json()),
        "ready" => ready(&args),
        "settle" => settle(&args),
        "freeport" => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| json!({"port": a.port()}))
            .map_err(|e| e.to_string()),
        _ => Err(format!("unknown command {cmd:?}\n{}", usage())),
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("genload {cmd}: {e}");
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
    fn u32(&self, k: &str) -> Res<u32> {
        self.str(k)?
            .parse()
            .map_err(|_| format!("--{k}: not a number"))
    }
    fn opt_u32(&self, k: &str) -> Res<Option<u32>> {
        self.0
            .get(k)
            .map(|v| v.parse().map_err(|_| format!("--{k}: not a number: {v:?}")))
            .transpose()
    }
}

// ---------------------------------------------------------------------------------------------
// Request files

struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    label: String,
    expect: Option<String>,
}

type Unit = Vec<Req>;

fn load(path: &str) -> Res<Vec<Unit>> {
    let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut units: Vec<Unit> = Vec::new();
    let mut last_unit: Option<u64> = None;
    let mut pos = 0usize;
    let take = |pos: &mut usize| -> Res<&[u8]> {
        let len_bytes = data
            .get(*pos..*pos + 4)
            .ok_or_else(|| format!("{path}: truncated at byte {pos}"))?;
        let len = u32::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let chunk = data
            .get(*pos + 4..*pos + 4 + len)
            .ok_or_else(|| format!("{path}: truncated record at byte {pos}"))?;
        *pos += 4 + len;
        Ok(chunk)
    };
    while pos < data.len() {
        let header: Value = serde_json::from_slice(take(&mut pos)?)
            .map_err(|e| format!("{path}: bad record header: {e}"))?;
        let body = take(&mut pos)?.to_vec();
        let s = |k: &str| header.get(k).and_then(Value::as_str).map(str::to_string);
        let unit = header.get("unit").and_then(Value::as_u64).unwrap_or(0);
        let headers = header
            .get("headers")
            .and_then(Value::as_array)
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| Some((h.get(0)?.as_str()?.to_string(), h.get(1)?.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let req = Req {
            method: s("method").unwrap_or_else(|| "GET".into()),
            path: s("path").ok_or_else(|| format!("{path}: record without a path"))?,
            headers,
            body,
            label: s("label").unwrap_or_else(|| "request".into()),
            expect: s("expect"),
        };
        if last_unit == Some(unit) {
            units.last_mut().unwrap().push(req);
        } else {
            units.push(vec![req]);
            last_unit = Some(unit);
        }
    }
    if units.is_empty() {
        return Err(format!("{path}: no requests"));
    }
    Ok(units)
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn agent() -> ureq::Agent {
    // No global/per-call timeout: with one set, ureq resolves the host on a fresh thread for every
    // request (see bench/tracking/README.md). Phase timeouts in run.sh bound a stuck server.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_body(Some(Duration::from_secs(300)))
        .timeout_recv_response(Some(Duration::from_secs(900)))
        .timeout_recv_body(Some(Duration::from_secs(900)))
        .proxy(None)
        .no_delay(true)
        .max_idle_connections_per_host(2)
        .build()
        .into()
}

/// Sends one request; returns (seconds, status, body).
fn send(agent: &ureq::Agent, base: &str, r: &Req) -> Res<(f64, u16, Vec<u8>)> {
    let url = format!("{base}{}", r.path);
    let t = Instant::now();
    let resp = match r.method.as_str() {
        "GET" | "DELETE" => {
            let mut b = if r.method == "GET" { agent.get(&url) } else { agent.delete(&url) };
            for (k, v) in &r.headers {
                b = b.header(k, v);
            }
            b.call()
        }
        m => {
            let mut b = match m {
                "POST" => agent.post(&url),
                "PATCH" => agent.patch(&url),
                "PUT" => agent.put(&url),
                _ => return Err(format!("unsupported method {m}")),
            };
            for (k, v) in &r.headers {
                b = b.header(k, v);
            }
            b.send(&r.body[..])
        }
    };
    let mut resp = resp.map_err(|e| format!("{} {}: {e}", r.method, r.path))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 31)
        .read_to_vec()
        .map_err(|e| format!("{} {}: reading body: {e}", r.method, r.path))?;
    Ok((t.elapsed().as_secs_f64(), status, body))
}

/// Checks a response: 200, and the expected substring when the request names one.
fn check(r: &Req, status: u16, body: &[u8]) -> Res<()> {
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status != 200 {
        return Err(format!("{} {}: HTTP {status}: {}", r.method, r.path, snippet()));
    }
    if let Some(e) = &r.expect
        && !body.windows(e.len()).any(|w| w == e.as_bytes())
    {
        return Err(format!("{} {}: response lacks {e:?}: {}", r.method, r.path, snippet()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics

fn summary(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
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
            eprintln!("genload: error: {e}");
            f.push(e);
        }
        n >= 200
    }
    fn to_json(&self) -> Value {
        let first = self.first.lock().map(|f| f.clone()).unwrap_or_default();
        json!({"count": self.count.load(Ordering::Relaxed), "first": first})
    }
}

// ---------------------------------------------------------------------------------------------
// replay: C clients take units in order; throughput and per-label latency

fn replay(a: &Args) -> Res<Value> {
    let base = a.str("url")?.trim_end_matches('/').to_string();
    let file = a.str("file")?;
    let clients = a.usize_or("clients", 8)?.max(1);
    let deadline = match a.usize_or("deadline-s", 0)? {
        0 => None,
        s => Some(Duration::from_secs(s as u64)),
    };
    let units = Arc::new(load(&file)?);
    let n = units.len();
    let requests: usize = units.iter().map(Vec::len).sum();
    let bytes: usize = units.iter().flatten().map(|r| r.body.len()).sum();
    eprintln!("replay: {n} units ({requests} requests, {} MB of bodies), {clients} clients",
        bytes / 1_000_000);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let partial = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Errors::default());
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (units, next, done, partial, errors) =
                (units.clone(), next.clone(), done.clone(), partial.clone(), errors.clone());
            let base = base.clone();
            thread::spawn(move || {
                let ag = agent();
                let mut unit_lat = Vec::new();
                let mut by_label: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                'units: loop {
                    if deadline.is_some_and(|d| t0.elapsed() > d) {
                        partial.store(true, Ordering::Relaxed);
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = units.get(i) else { break };
                    let tu = Instant::now();
                    for r in unit {
                        match send(&ag, &base, r).and_then(|(dt, st, body)| check(r, st, &body).map(|_| dt)) {
                            Ok(dt) => by_label.entry(r.label.clone()).or_default().push(dt),
                            Err(e) => {
                                if errors.record(e) {
                                    break 'units;
                                }
                                continue 'units;
                            }
                        }
                    }
                    unit_lat.push(tu.elapsed().as_secs_f64());
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d % 10_000 == 0 {
                        eprintln!("replay: {d}/{n} units, {:.1} s", t0.elapsed().as_secs_f64());
                    }
                }
                (unit_lat, by_label)
            })
        })
        .collect();
    let mut unit_lat = Vec::new();
    let mut by_label: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for h in handles {
        let (u, l) = h.join().map_err(|_| "replay thread panicked".to_string())?;
        unit_lat.extend(u);
        for (k, v) in l {
            by_label.entry(k).or_default().extend(v);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let mem = sampler.finish();
    let ok = unit_lat.len();
    let labels: serde_json::Map<String, Value> =
        by_label.into_iter().map(|(k, v)| (k, summary(v))).collect();
    Ok(json!({
        "command": "replay", "file": file, "clients": clients,
        "units": n, "units_ok": ok, "partial": partial.load(Ordering::Relaxed),
        "wall_s": (wall * 1e3).round() / 1e3,
        "units_per_s": (ok as f64 / wall * 10.0).round() / 10.0,
        "unit_latency": summary(unit_lat),
        "request_latency": labels,
        "errors": errors.to_json(),
        "server": mem,
    }))
}

// ---------------------------------------------------------------------------------------------
// seq: units one at a time, warm-up first; each unit timed as a whole

fn seq(a: &Args) -> Res<Value> {
    let base = a.str("url")?.trim_end_matches('/').to_string();
    let file = a.str("file")?;
    let reps = a.usize_or("reps", 100)?;
    let warmup = a.usize_or("warmup", 10)?;
    let save = a.0.get("save-dir").cloned();
    let units = load(&file)?;
    let ag = agent();
    let errors = Errors::default();
    let mut last: Vec<(u16, Vec<u8>)> = Vec::new();
    for w in 0..warmup {
        for r in &units[w % units.len()] {
            let (_, st, body) = send(&ag, &base, r)?;
            if let Err(e) = check(r, st, &body) {
                return Err(format!("warm-up: {e}"));
            }
        }
    }
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    let mut unit_lat = Vec::with_capacity(reps);
    let mut by_label: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut resp_bytes: BTreeMap<String, usize> = BTreeMap::new();
    let t0 = Instant::now();
    for i in 0..reps {
        let unit = &units[i % units.len()];
        let tu = Instant::now();
        let mut ok = true;
        last.clear();
        for r in unit {
            match send(&ag, &base, r) {
                Ok((dt, st, body)) => {
                    if let Err(e) = check(r, st, &body) {
                        ok = false;
                        errors.record(e);
                    }
                    by_label.entry(r.label.clone()).or_default().push(dt);
                    resp_bytes.insert(r.label.clone(), body.len());
                    last.push((st, body));
                }
                Err(e) => {
                    ok = false;
                    errors.record(e);
                }
            }
        }
        if ok {
            unit_lat.push(tu.elapsed().as_secs_f64());
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let mem = sampler.finish();
    if let Some(dir) = save {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
        for (i, (st, body)) in last.iter().enumerate() {
            let p = format!("{dir}/{i}.body");
            std::fs::write(&p, body).map_err(|e| format!("{p}: {e}"))?;
            let p = format!("{dir}/{i}.status");
            std::fs::write(&p, st.to_string()).map_err(|e| format!("{p}: {e}"))?;
        }
    }
    let labels: serde_json::Map<String, Value> =
        by_label.into_iter().map(|(k, v)| (k, summary(v))).collect();
    Ok(json!({
        "command": "seq", "file": file, "reps": reps, "warmup": warmup,
        "requests_per_unit": units[0].len(),
        "wall_s": (wall * 1e3).round() / 1e3,
        "unit_latency": summary(unit_lat),
        "request_latency": labels,
        "response_bytes": resp_bytes,
        "errors": errors.to_json(),
        "server": mem,
    }))
}

// ---------------------------------------------------------------------------------------------
// /proc: the server's process tree

fn proc_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|s| s.parse::<u32>().ok())) {
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

/// Fields of /proc/PID/stat after the command name: state, ppid, … (utime is index 11).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

#[derive(Clone, Copy, Default)]
struct ProcSample {
    rss_kb: u64,
    hwm_kb: u64,
    /// utime + stime, in clock ticks (USER_HZ = 100)
    cpu_ticks: u64,
    /// cutime + cstime: reaped children
    child_ticks: u64,
}

fn sample(pid: u32) -> Option<ProcSample> {
    let f = stat_fields(pid)?;
    if f.first().map(String::as_str) == Some("Z") {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Some(ProcSample {
        rss_kb: kb_field(&status, "VmRSS:").unwrap_or(0),
        hwm_kb: kb_field(&status, "VmHWM:").unwrap_or(0),
        cpu_ticks: tick(11) + tick(12),
        child_ticks: tick(13) + tick(14),
    })
}

struct Snapshot {
    per_pid: BTreeMap<u32, ProcSample>,
}

impl Snapshot {
    fn to_json(&self) -> Value {
        let p = &self.per_pid;
        json!({
            "procs": p.len(),
            "rss_kb": p.values().map(|s| s.rss_kb).sum::<u64>(),
            "hwm_sum_kb": p.values().map(|s| s.hwm_kb).sum::<u64>(),
            "hwm_max_kb": p.values().map(|s| s.hwm_kb).max().unwrap_or(0),
            "cpu_s": p.values().map(|s| s.cpu_ticks).sum::<u64>() as f64 / 100.0,
            "reaped_children_cpu_s": p.values().map(|s| s.child_ticks).sum::<u64>() as f64 / 100.0,
        })
    }
}

fn snapshot(root: u32) -> Snapshot {
    let per_pid = proc_tree(root).into_iter().filter_map(|p| sample(p).map(|s| (p, s))).collect();
    Snapshot { per_pid }
}

/// Samples a process tree every 100 ms (the tree itself re-read every second) until stopped.
/// Reports: the peak of the summed VmRSS, the sum over every process seen of its VmHWM (its own
/// peak since it started, so for the whole server lifetime, not just this phase), the largest
/// single VmHWM, and the CPU seconds the tree used during the phase (processes that exit during
/// it count up to their last sample).
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Value>>,
    self_cpu0: u64,
}

impl Sampler {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = pid.map(|root| {
            let stop = stop.clone();
            let start = snapshot(root).per_pid;
            thread::spawn(move || {
                let mut last: BTreeMap<u32, ProcSample> = start.clone();
                let mut peak_rss = 0u64;
                let mut peak_procs = 0usize;
                let mut pids: Vec<u32> = proc_tree(root);
                for tick in 1u64.. {
                    if tick % 10 == 0 {
                        pids = proc_tree(root);
                    }
                    let mut rss = 0;
                    let mut live = 0;
                    for &p in &pids {
                        if let Some(s) = sample(p) {
                            rss += s.rss_kb;
                            live += 1;
                            last.insert(p, s);
                        }
                    }
                    peak_rss = peak_rss.max(rss);
                    peak_procs = peak_procs.max(live);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                let cpu: u64 = last
                    .iter()
                    .map(|(p, s)| s.cpu_ticks - start.get(p).map_or(0, |s0| s0.cpu_ticks.min(s.cpu_ticks)))
                    .sum();
                json!({
                    "peak_rss_kb": peak_rss,
                    "procs": peak_procs,
                    "hwm_sum_kb": last.values().map(|s| s.hwm_kb).sum::<u64>(),
                    "hwm_max_kb": last.values().map(|s| s.hwm_kb).max().unwrap_or(0),
                    "cpu_s": cpu as f64 / 100.0,
                })
            })
        });
        Sampler { stop, handle, self_cpu0: self_ticks() }
    }

    fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let self_cpu = (self_ticks() - self.self_cpu0) as f64 / 100.0;
        let mut v = self.handle.and_then(|h| h.join().ok()).unwrap_or_else(|| json!({}));
        v["loadgen_cpu_s"] = json!(self_cpu);
        v
    }
}

fn self_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return 0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}

fn watch(a: &Args) -> Res<Value> {
    let pid = a.u32("pid")?;
    let stop = a.str("stop-file")?;
    let s = Sampler::start(Some(pid));
    while !std::path::Path::new(&stop).exists() {
        thread::sleep(Duration::from_millis(50));
    }
    Ok(s.finish())
}

// ---------------------------------------------------------------------------------------------
// Readiness and idleness

fn ready(a: &Args) -> Res<Value> {
    let url = format!("{}{}", a.str("url")?.trim_end_matches('/'),
        a.0.get("path").map_or("/health", String::as_str));
    let timeout = Duration::from_secs(a.usize_or("timeout-s", 180)? as u64);
    let ag: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_recv_response(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .into();
    let t0 = Instant::now();
    let mut last;
    loop {
        match ag.get(&url).call() {
            Ok(r) if r.status().as_u16() == 200 => break,
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        if t0.elapsed() > timeout {
            return Err(format!("{url} not ready after {timeout:?} (last: {last})"));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(json!({"ready_ms": (t0.elapsed().as_secs_f64() * 1e4).round() / 10.0}))
}

fn settle(a: &Args) -> Res<Value> {
    let pid = a.u32("pid")?;
    let max = Duration::from_secs(a.usize_or("max-s", 60)? as u64);
    let cpu = || -> u64 { snapshot(pid).per_pid.values().map(|s| s.cpu_ticks).sum() };
    let t0 = Instant::now();
    let mut quiet = 0;
    let mut prev = cpu();
    while t0.elapsed() < max {
        thread::sleep(Duration::from_millis(500));
        let now = cpu();
        // Processes that exited drop out of the sum: a negative delta counts as busy.
        quiet = if now >= prev && now - prev < 5 { quiet + 1 } else { 0 };
        prev = now;
        if quiet >= 2 {
            return Ok(json!({"settled": true, "settle_ms": t0.elapsed().as_millis() as u64}));
        }
    }
    Ok(json!({"settled": false, "settle_ms": t0.elapsed().as_millis() as u64}))
}
