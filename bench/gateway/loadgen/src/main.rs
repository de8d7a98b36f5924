//! bench/gateway's two Rust pieces, one binary (`gwload`):
//! - `upstream`: a fake OpenAI server that answers `/v1/chat/completions` after a fixed delay
//!   (JSON with usage, or an SSE stream with a usage chunk when asked), so that every gateway is
//!   measured against the same, known upstream;
//! - `load`: an open-loop, constant-rate load generator: request i is due at t0 + i/rate and its
//!   latency is measured from that due time, not from when it was actually sent, so a gateway
//!   (or this generator) falling behind shows up as latency instead of being hidden
//!   (coordinated omission);
//! - small helpers for run.sh: `check`, `ready`, `settle`, `rss`, `freeport`.
//!
//! Every command prints one JSON object on stdout; progress and errors go to stderr.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

mod load;
mod procs;
mod upstream;

type Res<T> = Result<T, String>;

fn usage() -> &'static str {
    "usage: gwload <command> [--flag value]...
  upstream --port P [--host 127.0.0.1] [--delay-ms 20] [--chunks 5] [--chunk-gap-ms 0] [--threads 1]
           fake OpenAI server; prints {\"event\":\"listening\",\"url\":...} once listening
  load     --url BASE --key K [--model bench] --rate R [--duration-s 10] [--warmup-s 2]
           [--stream 0|1] [--timeout-s 10] [--max-inflight 10000] [--threads 2]
           [--watch name=pid,name=pid]  (CPU and peak RSS of those process trees over the window)
  check    --url BASE --key K [--model bench]   one JSON and one streamed request, validated
  ready    --url BASE [--path /health] [--key K] [--timeout-s 120]
  settle   --pid P [--max-s 60]   (wait until the process tree is idle: <5% of a core for 1 s)
  rss      --pid P                (RSS of the process tree, VmHWM of its processes)
  freeport"
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Res<Self> {
        let mut m = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                return Err(format!("unexpected argument '{k}'"));
            };
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            m.insert(name.to_string(), v.clone());
        }
        Ok(Args(m))
    }
    fn str(&self, k: &str) -> Res<String> {
        self.0.get(k).cloned().ok_or_else(|| format!("--{k} is required"))
    }
    fn str_or(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn f64_or(&self, k: &str, d: f64) -> Res<f64> {
        match self.0.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: not a number: '{v}'")),
        }
    }
    fn u64_or(&self, k: &str, d: u64) -> Res<u64> {
        match self.0.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: not an integer: '{v}'")),
        }
    }
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
            eprintln!("gwload: {e}\n{}", usage());
            std::process::exit(2);
        }
    };
    let result = match cmd.as_str() {
        "upstream" => upstream::run(&args),
        "load" => load::run(&args),
        "check" => load::check(&args),
        "ready" => load::ready(&args),
        "settle" => procs::settle(&args),
        "rss" => procs::rss(&args),
        "freeport" => freeport(),
        _ => {
            eprintln!("gwload: unknown command '{cmd}'\n{}", usage());
            std::process::exit(2);
        }
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("gwload {cmd}: {e}");
            std::process::exit(1);
        }
    }
}

fn freeport() -> Res<Value> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    Ok(json!(port))
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since `t0`, rounded to milliseconds.
fn since_s(t0: Instant) -> f64 {
    (t0.elapsed().as_secs_f64() * 1e3).round() / 1e3
}
