//! Inference load for `bench/serving` (command `infer`): batch-1 requests at a fixed concurrency
//! for a fixed time, against the Open Inference Protocol v2 (`POST /v2/models/NAME/infer`) or
//! MLflow's scoring server (`POST /invocations` with `{"dataframe_split": {"columns", "data"}}`,
//! or, `--format mlflow-inputs`, the tensor form `{"inputs": {"INPUT": [[...]]}}` that mlflow's
//! onnx flavor needs for a model with a 2-D output).
//!
//! Each of the C client threads holds one keep-alive HTTP/1.1 connection (TCP_NODELAY) and sends
//! one request at a time (closed loop). Requests are pre-serialized before the clock starts (one
//! per row of `--rows`, up to 1,000 different rows, each thread starting at a different row), and
//! written and read with a minimal HTTP/1.1 client on a plain `TcpStream`: a ureq call costs tens
//! of µs of CPU, which on a 2-core box shared with the server would be a large part of a ~100 µs
//! request. A request counts when it completes inside the measured window (after `--warmup-s`,
//! for `--duration-s`); latency = request written → response body fully read. Any answer other
//! than HTTP 200, or an I/O error, counts as an error (then the connection is opened again).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Args, Errors, Res, Sampler};

const MAX_POOL: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Oip,
    Mlflow,
    MlflowInputs,
}

pub fn infer(a: &Args) -> Res<Value> {
    let url = a.str("url")?;
    let format = match a.0.get("format").map_or("oip", String::as_str) {
        "oip" => Format::Oip,
        "mlflow" => Format::Mlflow,
        "mlflow-inputs" => Format::MlflowInputs,
        f => return Err(format!("--format: oip, mlflow or mlflow-inputs, not {f:?}")),
    };
    let concurrency = a.usize_or("concurrency", 1)?.max(1);
    let duration = Duration::from_secs_f64(a.f64_or("duration-s", 10.0)?);
    let warmup = Duration::from_secs_f64(a.f64_or("warmup-s", 2.0)?);
    let io_timeout = Duration::from_secs(a.usize_or("timeout-s", 60)? as u64);
    let input = a.0.get("input").cloned().unwrap_or_else(|| "features".into());
    let model = a.0.get("model").cloned().unwrap_or_default();
    if format == Format::Oip && model.is_empty() {
        return Err("--model NAME is required with --format oip".into());
    }

    let rows_path = a.str("rows")?;
    let text = std::fs::read_to_string(&rows_path).map_err(|e| format!("{rows_path}: {e}"))?;
    let rows: Vec<Vec<f64>> =
        serde_json::from_str(&text).map_err(|e| format!("{rows_path}: not a JSON list of rows: {e}"))?;
    let width = rows.first().map_or(0, Vec::len);
    if width == 0 || rows.iter().any(|r| r.len() != width) {
        return Err(format!("{rows_path}: rows must be non-empty and of one length"));
    }
    let columns: Vec<String> = match a.0.get("columns") {
        Some(c) => c.split(',').map(str::to_string).collect(),
        None => (0..width).map(|i| format!("f{i}")).collect(),
    };
    if columns.len() != width {
        return Err(format!("--columns names {} columns, rows have {width}", columns.len()));
    }

    let rest = url
        .strip_prefix("http://")
        .ok_or("--url must be http://HOST:PORT")?
        .trim_end_matches('/');
    let host = rest.to_string();
    let path = match format {
        Format::Oip => format!("/v2/models/{model}/infer"),
        Format::Mlflow | Format::MlflowInputs => "/invocations".to_string(),
    };
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        rows.iter()
            .take(MAX_POOL)
            .map(|r| request_bytes(format, &host, &path, &input, &columns, r))
            .collect(),
    );
    let body_bytes: usize = requests.iter().map(Vec::len).sum::<usize>() / requests.len();

    // One untimed request first: a wrong URL or body fails here, loudly, with the answer.
    {
        let mut c = Conn::open(&host, io_timeout)?;
        let (status, body) = c.call(&requests[0])?;
        if status != 200 {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(400).collect();
            return Err(format!("POST {path}: HTTP {status}: {snippet}"));
        }
    }

    eprintln!(
        "infer: {} {path}, concurrency {concurrency}, warm-up {:.1}s + {:.1}s, {} distinct rows",
        host,
        warmup.as_secs_f64(),
        duration.as_secs_f64(),
        requests.len()
    );
    let errors = Arc::new(Errors::default());
    let stop = Arc::new(AtomicBool::new(false));
    // All threads connect first, then start together.
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let t_start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let handles: Vec<_> = (0..concurrency)
        .map(|t| {
            let (requests, errors, stop, barrier, t_start) = (
                requests.clone(),
                errors.clone(),
                stop.clone(),
                barrier.clone(),
                t_start.clone(),
            );
            let host = host.clone();
            thread::spawn(move || {
                let mut conn = Conn::open(&host, io_timeout);
                barrier.wait();
                let t0 = *t_start.wait();
                let (from, to) = (t0 + warmup, t0 + warmup + duration);
                let n = requests.len();
                let mut i = (t * 7919) % n;
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut errs = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = match &mut conn {
                        Ok(c) => c,
                        Err(_) => {
                            thread::sleep(Duration::from_millis(10));
                            conn = Conn::open(&host, io_timeout);
                            if let Err(e) = &conn
                                && errors.record(format!("connect: {e}"))
                            {
                                break;
                            }
                            continue;
                        }
                    };
                    let sent = Instant::now();
                    let res = c.call(&requests[i]);
                    let done = Instant::now();
                    i = (i + 1) % n;
                    let in_window = done >= from && done <= to;
                    match res {
                        Ok((200, _)) => {
                            if in_window {
                                lat.push((done - sent).as_nanos().min(u32::MAX as u128) as u32);
                            }
                        }
                        Ok((status, body)) => {
                            errs += in_window as u64;
                            let snippet: String =
                                String::from_utf8_lossy(&body).chars().take(200).collect();
                            errors.record(format!("HTTP {status}: {snippet}"));
                            if !c.keep_alive {
                                conn = Conn::open(&host, io_timeout);
                            }
                        }
                        Err(e) => {
                            errs += in_window as u64;
                            errors.record(e);
                            conn = Conn::open(&host, io_timeout);
                        }
                    }
                    if done > to {
                        break;
                    }
                    if let Ok(c) = &conn
                        && !c.keep_alive
                    {
                        conn = Conn::open(&host, io_timeout);
                    }
                }
                (lat, errs)
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let _ = t_start.set(t0);
    // The sampler (peak RSS, CPU of the server tree and of this process) covers the window only.
    let until = |d: Duration| {
        let el = t0.elapsed();
        if el < d {
            thread::sleep(d - el);
        }
    };
    until(warmup);
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    let machine0 = machine_cpu();
    until(warmup + duration);
    let machine1 = machine_cpu();
    let mut mem = sampler.finish();
    // Whole-machine CPU over the window, to show what else ran (another build, a test run)
    // besides the server and this load generator. Interrupt time (the loopback network's
    // softirqs, not charged to any process) and steal (the hypervisor running someone else) are
    // reported on their own.
    if let (Some(m0), Some(m1)) = (machine0, machine1) {
        let ours = mem.get("server_cpu_s").and_then(Value::as_f64).unwrap_or(0.0)
            + mem.get("loadgen_cpu_s").and_then(Value::as_f64).unwrap_or(0.0);
        let r = |x: f64| (x * 100.0).round() / 100.0;
        mem["machine_process_cpu_s"] = json!(r(m1.procs - m0.procs));
        mem["other_cpu_s"] = json!(r((m1.procs - m0.procs - ours).max(0.0)));
        mem["irq_cpu_s"] = json!(r(m1.irq - m0.irq));
        mem["steal_cpu_s"] = json!(r(m1.steal - m0.steal));
    }
    // Threads stop on their first answer after the window; a stuck server is bounded by the
    // I/O timeout.
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    let mut window_errors = 0u64;
    for h in handles {
        let (l, e) = h.join().map_err(|_| "client thread panicked".to_string())?;
        lat.extend(l);
        window_errors += e;
    }
    lat.sort_unstable();
    let secs = duration.as_secs_f64();
    let n = lat.len();
    let q = |p: f64| -> Value {
        if n == 0 {
            return Value::Null;
        }
        let v = lat[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        json!((v as f64 / 100.0).round() / 10.0)
    };
    let mean = if n == 0 {
        Value::Null
    } else {
        json!((lat.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 100.0).round() / 10.0)
    };
    Ok(json!({
        "workload": "infer",
        "url": url, "path": path,
        "format": match format {
            Format::Oip => "oip",
            Format::Mlflow => "mlflow",
            Format::MlflowInputs => "mlflow-inputs",
        },
        "concurrency": concurrency,
        "warmup_s": warmup.as_secs_f64(), "duration_s": secs,
        "distinct_rows": requests.len(), "features": width, "request_bytes": body_bytes,
        "requests": n,
        "req_per_s": (n as f64 / secs * 10.0).round() / 10.0,
        "latency_us": {
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
            "min": lat.first().map(|&v| (v as f64 / 100.0).round() / 10.0),
            "max": lat.last().map(|&v| (v as f64 / 100.0).round() / 10.0),
            "mean": mean,
        },
        "window_errors": window_errors,
        "errors": errors.to_json(),
        "memory": mem,
    }))
}

/// CPU seconds of the whole machine so far, from the first line of /proc/stat (USER_HZ = 100).
struct MachineCpu {
    /// user + nice + system: time charged to processes (guest time is already in user).
    procs: f64,
    /// irq + softirq
    irq: f64,
    steal: f64,
}

fn machine_cpu() -> Option<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / 100.0;
    Some(MachineCpu {
        procs: at(0) + at(1) + at(2),
        irq: at(5) + at(6),
        steal: at(7),
    })
}

/// The whole HTTP/1.1 request for one row, ready to write.
fn request_bytes(
    format: Format,
    host: &str,
    path: &str,
    input: &str,
    columns: &[String],
    row: &[f64],
) -> Vec<u8> {
    let data = serde_json::to_string(row).unwrap_or_default();
    let body = match format {
        Format::Oip => format!(
            r#"{{"inputs":[{{"name":{},"shape":[1,{}],"datatype":"FP32","data":{data}}}]}}"#,
            Value::from(input),
            row.len()
        ),
        Format::Mlflow => format!(
            r#"{{"dataframe_split":{{"columns":{},"data":[{data}]}}}}"#,
            serde_json::to_string(columns).unwrap_or_default()
        ),
        Format::MlflowInputs => format!(r#"{{"inputs":{{{}:[{data}]}}}}"#, Value::from(input)),
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: */*\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    keep_alive: bool,
}

impl Conn {
    fn open(host: &str, timeout: Duration) -> Res<Conn> {
        let s = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        Ok(Conn {
            s,
            buf: Vec::with_capacity(1 << 16),
            keep_alive: true,
        })
    }

    /// Writes `req`, reads the whole answer: (status, body).
    fn call(&mut self, req: &[u8]) -> Res<(u16, Vec<u8>)> {
        self.s.write_all(req).map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        // Head
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| "non-UTF-8 response head")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {:?}", head.lines().next()))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut keep_alive = !head.starts_with("HTTP/1.0");
        for l in lines {
            let Some((k, v)) = l.split_once(':') else { continue };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                keep_alive = !v.eq_ignore_ascii_case("close");
            }
        }
        self.keep_alive = keep_alive;
        let body = if chunked {
            self.read_chunked(head_end)?
        } else if let Some(len) = length {
            while self.buf.len() < head_end + len {
                self.fill()?;
            }
            self.buf[head_end..head_end + len].to_vec()
        } else {
            // No length: the body runs to the end of the connection.
            self.keep_alive = false;
            while self.fill_or_eof()? {}
            self.buf[head_end..].to_vec()
        };
        Ok((status, body))
    }

    fn read_chunked(&mut self, mut pos: usize) -> Res<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find(&self.buf[pos..], b"\r\n") {
                    break pos + p;
                }
                self.fill()?;
            };
            let size_text = std::str::from_utf8(&self.buf[pos..line_end]).unwrap_or("");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            pos = line_end + 2;
            while self.buf.len() < pos + size + 2 {
                self.fill()?;
            }
            if size == 0 {
                // (no trailers expected) the final CRLF is in the buffer
                return Ok(body);
            }
            body.extend_from_slice(&self.buf[pos..pos + size]);
            pos += size + 2;
        }
    }

    fn fill(&mut self) -> Res<()> {
        if self.fill_or_eof()? {
            Ok(())
        } else {
            Err("connection closed by the server".into())
        }
    }

    fn fill_or_eof(&mut self) -> Res<bool> {
        let mut chunk = [0u8; 16384];
        let n = self.s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
