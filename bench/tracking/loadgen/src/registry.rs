//! Model registry workloads for `bench/registry` (commands `registry-populate`, `registry-query`).
//!
//! Data (the same as `bench/registry/populate_mlflow.py` writes in-process; keep them in step):
//! model `i` in 0..M is `bench-model-{i:05}`, team `TEAMS[i % 20]`, registered-model tags
//! `team`, `owner=user-{i % 37}`, description `benchmark model {i}`; one run `train-{i:05}` per
//! model in experiment `bench-registry`; versions 1..=V with source `runs:/<run>/models/v{k}`,
//! that run_id, and tags `team`, `dataset=ds-{k % 5}`, `commit=<8 hex>`; alias `champion` on
//! version `1 + (7i + 3) % V`.
//!
//! Queries are sent the way the mlflow 3.x client sends them:
//! `search_model_versions("name='m'")` → `GET model-versions/search?filter=name='m'&max_results=10000`,
//! `get_model_version_by_alias(m, "champion")` → `GET registered-models/alias?name=m&alias=champion`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Args, Client, Errors, Res, Sampler, parse_ok, summary, unit};

const TEAMS: &[u8; 20] = b"abcdefghijklmnopqrst";
/// What the mlflow client sends as max_results for search_model_versions (its default).
const CLIENT_MV_MAX_RESULTS: &str = "10000";
const BROAD_MAX_RESULTS: usize = 1000;

fn model_name(i: usize) -> String {
    format!("bench-model-{i:05}")
}

fn team(i: usize) -> String {
    (TEAMS[i % TEAMS.len()] as char).to_string()
}

fn champion_version(i: usize, versions: usize) -> usize {
    1 + (i * 7 + 3) % versions
}

fn commit_tag(i: usize, k: usize, versions: usize) -> String {
    format!(
        "{:08x}",
        ((i * versions + k) as u64).wrapping_mul(2_654_435_761) & 0xffff_ffff
    )
}

/// Number of models whose team is `TEAMS[t]`.
fn models_in_team(t: usize, models: usize) -> usize {
    if t >= models {
        0
    } else {
        (models - t).div_ceil(TEAMS.len())
    }
}

/// Deterministic pseudo-random model for query `q` of stream `stream` (same on every server).
fn pick(stream: u64, q: usize, n: usize) -> usize {
    ((unit(stream * 1_000_003 + q as u64 * 7919 + 17) * n as f64) as usize).min(n - 1)
}

/// A clear message when the server has no such endpoint (loopml answers unknown API paths with
/// 404 ENDPOINT_NOT_FOUND; mlflow with an HTML 404).
fn explain(what: &str, err: String) -> String {
    if err.contains("ENDPOINT_NOT_FOUND") || (err.contains("HTTP 404") && err.contains("<html")) {
        format!(
            "the server does not implement the model registry endpoint {what} (404 ENDPOINT_NOT_FOUND): \
             is this a build with the registry REST API? ({err})"
        )
    } else {
        err
    }
}

/// Checks that the three registry endpoints this bench reads exist. A missing model must give
/// RESOURCE_DOES_NOT_EXIST (or an empty search), not ENDPOINT_NOT_FOUND.
fn probe(cl: &Client) -> Res<()> {
    let missing = "__bench_probe_no_such_model__";
    let checks: [(&str, Vec<(&str, String)>); 3] = [
        ("registered-models/get", vec![("name", missing.to_string())]),
        (
            "model-versions/search",
            vec![
                ("filter", format!("name='{missing}'")),
                ("max_results", "10".to_string()),
            ],
        ),
        (
            "registered-models/alias",
            vec![
                ("name", missing.to_string()),
                ("alias", "champion".to_string()),
            ],
        ),
    ];
    for (path, q) in checks {
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (_, status, text) = cl.get_raw(&cl.api(path), &q)?;
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("error_code")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let ok = match status {
            200 => true,
            400 | 404 => code != "ENDPOINT_NOT_FOUND" && !code.is_empty(),
            _ => false,
        };
        if !ok {
            let snippet: String = text.chars().take(200).collect();
            return Err(explain(
                &format!("GET {path}"),
                format!("probe GET {path}: HTTP {status} {code}: {snippet}"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// registry-populate: the data above, over HTTP, C clients each taking every C-th model

pub fn populate(a: &Args) -> Res<Value> {
    let url = a.str("url")?;
    let models = a.usize_or("models", 1000)?.max(1);
    let versions = a.usize_or("versions", 20)?.max(1);
    let clients = a.usize_or("clients", 8)?.max(1);
    let cl = Client::new(&url);
    probe(&cl)?;
    let exp = cl
        .create_experiment("bench-registry")
        .map_err(|e| explain("POST experiments/create", e))?;
    let errors = Arc::new(Errors::default());
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    eprintln!(
        "registry-populate: {models} models × {versions} versions with {clients} clients over HTTP"
    );
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (url, exp, errors) = (url.clone(), exp.clone(), errors.clone());
            thread::spawn(move || {
                let cl = Client::new(&url);
                let mut lat = Vec::new();
                let mut i = c;
                while i < models {
                    let r = populate_model(&cl, &exp, i, versions, &mut lat);
                    if let Err(e) = r
                        && errors.record(e)
                    {
                        break;
                    }
                    if c == 0 && (i / clients + 1) % 25 == 0 {
                        eprintln!(
                            "registry-populate: ~{} models, {:.0} s",
                            i + 1,
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    i += clients;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(
            h.join()
                .map_err(|_| "populate thread panicked".to_string())?,
        );
    }
    let wall = t0.elapsed().as_secs_f64();
    let mem = sampler.finish();
    if errors.count.load(Ordering::Relaxed) > 0 {
        return Err(format!("populate failed: {}", errors.to_json()));
    }
    let writes = 1 + lat.len();
    Ok(json!({
        "workload": "registry-populate",
        "method": "http",
        "models": models, "versions": versions, "clients": clients,
        "populate_s": (wall * 1e3).round() / 1e3,
        "writes": writes,
        "writes_per_s": (writes as f64 / wall * 10.0).round() / 10.0,
        "write_latency": summary(lat),
        "errors": errors.to_json(),
        "memory": mem,
    }))
}

fn populate_model(
    cl: &Client,
    exp: &str,
    i: usize,
    versions: usize,
    lat: &mut Vec<f64>,
) -> Res<()> {
    let name = model_name(i);
    let team = team(i);
    let t = Instant::now();
    let run_id = cl.create_run(exp, &format!("train-{i:05}"))?;
    lat.push(t.elapsed().as_secs_f64());
    let body = json!({
        "name": name,
        "tags": [{"key": "team", "value": team}, {"key": "owner", "value": format!("user-{}", i % 37)}],
        "description": format!("benchmark model {i}"),
    });
    let (dt, _) = cl
        .post("registered-models/create", &body)
        .map_err(|e| explain("POST registered-models/create", e))?;
    lat.push(dt);
    for k in 1..=versions {
        let body = json!({
            "name": name,
            "source": format!("runs:/{run_id}/models/v{k}"),
            "run_id": run_id,
            "tags": [
                {"key": "team", "value": team},
                {"key": "dataset", "value": format!("ds-{}", k % 5)},
                {"key": "commit", "value": commit_tag(i, k, versions)},
            ],
        });
        let (dt, v) = cl
            .post("model-versions/create", &body)
            .map_err(|e| explain("POST model-versions/create", e))?;
        lat.push(dt);
        let got = v.pointer("/model_version/version").and_then(version_of);
        if got != Some(k) {
            return Err(format!(
                "model-versions/create {name}: expected version {k}, got {:?}",
                v.pointer("/model_version/version")
            ));
        }
    }
    let body = json!({"name": name, "alias": "champion",
                      "version": champion_version(i, versions).to_string()});
    let (dt, _) = cl
        .post("registered-models/alias", &body)
        .map_err(|e| explain("POST registered-models/alias", e))?;
    lat.push(dt);
    Ok(())
}

/// A model version number sent as a string (as MLflow does) or as a number.
fn version_of(v: &Value) -> Option<usize> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64().map(|n| n as usize))
}

// ---------------------------------------------------------------------------------------------
// registry-query: timed reads against a populated server

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Search,
    Alias,
    Broad,
}

struct Spec {
    models: usize,
    versions: usize,
}

impl Spec {
    /// The request for query `q` of stream `stream`: (path, query, what it must return).
    fn request(
        &self,
        kind: Kind,
        stream: u64,
        q: usize,
    ) -> (&'static str, Vec<(&'static str, String)>, usize) {
        match kind {
            Kind::Search => {
                let i = pick(stream, q, self.models);
                (
                    "model-versions/search",
                    vec![
                        ("filter", format!("name='{}'", model_name(i))),
                        ("max_results", CLIENT_MV_MAX_RESULTS.to_string()),
                    ],
                    i,
                )
            }
            Kind::Alias => {
                let i = pick(stream, q, self.models);
                (
                    "registered-models/alias",
                    vec![("name", model_name(i)), ("alias", "champion".to_string())],
                    i,
                )
            }
            Kind::Broad => {
                let t = pick(stream, q, TEAMS.len().min(self.models));
                (
                    "model-versions/search",
                    vec![
                        ("filter", format!("tags.team='{}'", TEAMS[t] as char)),
                        ("max_results", BROAD_MAX_RESULTS.to_string()),
                    ],
                    t,
                )
            }
        }
    }

    /// Full check of one answer (JSON parsed; outside the timed span).
    fn verify(&self, kind: Kind, target: usize, text: &str) -> Res<usize> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
        match kind {
            Kind::Search => {
                let mvs = v
                    .get("model_versions")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let name = model_name(target);
                let mut seen = HashSet::new();
                for mv in mvs {
                    if mv.get("name").and_then(Value::as_str) != Some(name.as_str()) {
                        return Err(format!("search {name}: a version of another model: {mv}"));
                    }
                    match mv.get("version").and_then(version_of) {
                        Some(k) if (1..=self.versions).contains(&k) && seen.insert(k) => {}
                        _ => return Err(format!("search {name}: bad or repeated version in {mv}")),
                    }
                }
                if mvs.len() != self.versions {
                    return Err(format!(
                        "search {name}: {} versions, expected {}",
                        mvs.len(),
                        self.versions
                    ));
                }
                Ok(mvs.len())
            }
            Kind::Alias => {
                let name = model_name(target);
                let want = champion_version(target, self.versions);
                let mv = v
                    .get("model_version")
                    .ok_or_else(|| format!("alias {name}: no model_version in {v}"))?;
                let got = mv.get("version").and_then(version_of);
                let has_alias = mv
                    .get("aliases")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("champion")));
                if mv.get("name").and_then(Value::as_str) != Some(name.as_str())
                    || got != Some(want)
                    || !has_alias
                {
                    return Err(format!(
                        "alias {name}@champion: expected version {want} with aliases [champion], got {mv}"
                    ));
                }
                Ok(1)
            }
            Kind::Broad => {
                let mvs = v
                    .get("model_versions")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let letter = (TEAMS[target] as char).to_string();
                let want =
                    (models_in_team(target, self.models) * self.versions).min(BROAD_MAX_RESULTS);
                for mv in mvs {
                    let tag_ok = mv.get("tags").and_then(Value::as_array).is_some_and(|ts| {
                        ts.iter().any(|t| {
                            t.get("key").and_then(Value::as_str) == Some("team")
                                && t.get("value").and_then(Value::as_str) == Some(letter.as_str())
                        })
                    });
                    let model_ok = mv
                        .get("name")
                        .and_then(Value::as_str)
                        .and_then(|n| n.strip_prefix("bench-model-"))
                        .and_then(|s| s.parse::<usize>().ok())
                        .is_some_and(|i| i % TEAMS.len() == target);
                    if !tag_ok || !model_ok {
                        return Err(format!(
                            "tags.team='{letter}': a version that does not match: {mv}"
                        ));
                    }
                }
                if mvs.len() != want {
                    return Err(format!(
                        "tags.team='{letter}': {} versions, expected {want}",
                        mvs.len()
                    ));
                }
                Ok(mvs.len())
            }
        }
    }
}

/// One query; returns (seconds, status, body). Round trip only: no parsing inside the span.
/// With `fresh`, the request carries `Connection: close`, so every query opens a new TCP
/// connection (see README: a fresh connection avoids the delayed-ACK stall that keep-alive
/// requests meet on a server that writes headers and body separately without TCP_NODELAY).
fn send(
    cl: &Client,
    spec: &Spec,
    kind: Kind,
    stream: u64,
    q: usize,
    fresh: bool,
) -> Res<(f64, usize, String)> {
    let (path, query, target) = spec.request(kind, stream, q);
    let url = cl.api(path);
    let t = Instant::now();
    let mut req = cl.agent.get(&url);
    if fresh {
        req = req.header("Connection", "close");
    }
    for (k, v) in &query {
        req = req.query(*k, v.as_str());
    }
    let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 31)
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading body: {e}"))?;
    let dt = t.elapsed().as_secs_f64();
    parse_ok(path, status, &text).map_err(|e| explain(&format!("GET {path}"), e))?;
    Ok((dt, target, text))
}

/// Sequential: one client, `warmup` untimed queries, then `n` timed ones, every answer checked.
/// A wrong answer is counted (and the first few kept) rather than ending the run; an HTTP error
/// ends it.
fn sequential(
    cl: &Client,
    spec: &Spec,
    kind: Kind,
    n: usize,
    warmup: usize,
    fresh: bool,
) -> Res<Value> {
    let mut bad = Bad::default();
    for w in 0..warmup {
        let (_, target, text) = send(cl, spec, kind, 900 + kind as u64, w, fresh)?;
        bad.check(spec.verify(kind, target, &text));
    }
    let mut lat = Vec::with_capacity(n);
    let mut returned = 0usize;
    for q in 0..n {
        let (dt, target, text) = send(cl, spec, kind, kind as u64, q, fresh)?;
        lat.push(dt);
        returned += bad.check(spec.verify(kind, target, &text));
    }
    let wall: f64 = lat.iter().sum();
    Ok(json!({
        "queries": n,
        "connection": if fresh { "new per request" } else { "keep-alive" },
        "latency": summary(lat),
        "qps": if wall > 0.0 { (n as f64 / wall * 10.0).round() / 10.0 } else { 0.0 },
        "returned_per_query": if n > 0 { returned as f64 / n as f64 } else { 0.0 },
        "verified": n + warmup,
        "wrong": bad.count,
        "wrong_first": bad.first,
    }))
}

#[derive(Default)]
struct Bad {
    count: usize,
    first: Vec<String>,
}

impl Bad {
    fn check(&mut self, r: Res<usize>) -> usize {
        match r {
            Ok(n) => n,
            Err(e) => {
                self.count += 1;
                if self.first.len() < 3 {
                    eprintln!("registry-query: wrong answer: {e}");
                    self.first.push(e.chars().take(600).collect());
                }
                0
            }
        }
    }
    fn merge(&mut self, o: Bad) {
        self.count += o.count;
        for e in o.first {
            if self.first.len() < 3 {
                self.first.push(e);
            }
        }
    }
}

/// Concurrent: `clients` threads, each with its own connection, `warmup` untimed queries each,
/// then all start together and run `per_client` timed queries each. Every answer is checked for
/// its status and the model name; one in `FULL_EVERY` is parsed and checked in full (full checks
/// of every answer would spend load-generator CPU that the server needs on 2 cores).
fn concurrent(
    url: &str,
    spec: &Arc<Spec>,
    kind: Kind,
    clients: usize,
    per_client: usize,
    warmup: usize,
    fresh: bool,
) -> Res<Value> {
    const FULL_EVERY: usize = 8;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (url, spec, barrier) = (url.to_string(), spec.clone(), barrier.clone());
            thread::spawn(move || -> Res<(Vec<f64>, usize, Bad)> {
                let cl = Client::new(&url);
                let stream = 100 * (c as u64 + 1) + kind as u64;
                let mut bad = Bad::default();
                let mut warm = Ok(());
                for w in 0..warmup {
                    match send(&cl, &spec, kind, stream + 50, w, fresh) {
                        Ok((_, t, text)) => {
                            bad.check(spec.verify(kind, t, &text));
                        }
                        Err(e) => {
                            warm = Err(e);
                            break;
                        }
                    }
                }
                // Reach the barrier even after an error, or the other threads would wait forever.
                barrier.wait();
                warm?;
                let mut lat = Vec::with_capacity(per_client);
                let mut verified = 0;
                for q in 0..per_client {
                    let (dt, target, text) = send(&cl, &spec, kind, stream, q, fresh)?;
                    lat.push(dt);
                    if q % FULL_EVERY == c % FULL_EVERY {
                        bad.check(spec.verify(kind, target, &text));
                        verified += 1;
                    } else if !text.contains(&model_name(target)) {
                        bad.check(Err(format!(
                            "answer for {} does not name it: {}",
                            model_name(target),
                            text.chars().take(200).collect::<String>()
                        )));
                    }
                }
                Ok((lat, verified, bad))
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut verified = 0;
    let mut bad = Bad::default();
    let mut first_err = None;
    for h in handles {
        match h.join().map_err(|_| "query thread panicked".to_string())? {
            Ok((l, v, b)) => {
                lat.extend(l);
                verified += v;
                bad.merge(b);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(e);
    }
    let n = lat.len();
    Ok(json!({
        "clients": clients,
        "queries": n,
        "connection": if fresh { "new per request" } else { "keep-alive" },
        "wall_s": (wall * 1e3).round() / 1e3,
        "qps": (n as f64 / wall * 10.0).round() / 10.0,
        "latency": summary(lat),
        "verified": verified,
        "wrong": bad.count,
        "wrong_first": bad.first,
    }))
}

pub fn query(a: &Args) -> Res<Value> {
    let url = a.str("url")?;
    let spec = Arc::new(Spec {
        models: a.usize_or("models", 1000)?.max(1),
        versions: a.usize_or("versions", 20)?.max(1),
    });
    let queries = a.usize_or("queries", 500)?;
    let clients = a.usize_or("clients", 8)?.max(1);
    let per_client = a.usize_or("conc-queries", 250)?;
    let broad = a.usize_or("broad-queries", 50)?;
    let warmup = a.usize_or("warmup", 16)?;
    let cl = Client::new(&url);
    probe(&cl)?;
    let sampler = Sampler::start(a.opt_u32("watch-pid")?);
    let t0 = Instant::now();
    let mut out = json!({
        "workload": "registry-query",
        "models": spec.models, "versions": spec.versions,
        "clients": clients, "warmup": warmup,
    });
    for (label, kind) in [("search", Kind::Search), ("alias", Kind::Alias)] {
        eprintln!("registry-query: {label}: {queries} sequential");
        let seq = sequential(&cl, &spec, kind, queries, warmup, false)?;
        eprintln!("registry-query: {label}: {queries} sequential, new connection each");
        let seq_fresh = sequential(&cl, &spec, kind, queries, warmup, true)?;
        eprintln!("registry-query: {label}: {clients} clients × {per_client}");
        let conc = concurrent(
            &url,
            &spec,
            kind,
            clients,
            per_client,
            warmup.div_ceil(4),
            false,
        )?;
        eprintln!("registry-query: {label}: {clients} clients × {per_client}, new connection each");
        let conc_fresh = concurrent(
            &url,
            &spec,
            kind,
            clients,
            per_client,
            warmup.div_ceil(4),
            true,
        )?;
        out[label] =
            json!({"seq": seq, "seq_fresh": seq_fresh, "conc": conc, "conc_fresh": conc_fresh});
    }
    if broad > 0 {
        eprintln!(
            "registry-query: broad: {broad} sequential tags.team='x' max_results={BROAD_MAX_RESULTS}"
        );
        let seq = sequential(&cl, &spec, Kind::Broad, broad, warmup.min(4), false)?;
        let want = (models_in_team(0, spec.models) * spec.versions).min(BROAD_MAX_RESULTS);
        out["broad"] = json!({
            "seq": seq,
            "filter": "tags.team='<a..t>'",
            "max_results": BROAD_MAX_RESULTS,
            "expected_for_team_a": want,
        });
    }
    out["query_s"] = json!((t0.elapsed().as_secs_f64() * 1e3).round() / 1e3);
    let wrong: u64 = ["search", "alias", "broad"]
        .iter()
        .flat_map(|w| {
            ["seq", "seq_fresh", "conc", "conc_fresh"].map(|p| {
                out.pointer(&format!("/{w}/{p}/wrong"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            })
        })
        .sum();
    out["checks"] = json!({"wrong_answers": wrong, "ok": wrong == 0});
    out["memory"] = sampler.finish();
    Ok(out)
}
