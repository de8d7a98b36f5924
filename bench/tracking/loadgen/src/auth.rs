//! `auth-overhead`: what logins cost per request. The same server build is started twice, once
//! without and once with authentication; this drives both in interleaved rounds with the same
//! sequential requests (one keep-alive connection, one request in flight, so latency is the
//! server's own time plus loopback), and reports per-target p50/p99 (median over rounds) and
//! the difference "auth on − auth off".
//!
//! Targets: `off` (no credentials), `admin` (Basic, an admin: no grant lookup) and `user`
//! (Basic, a regular user working in an experiment it created: the credential check plus the
//! permission lookup through the run's experiment). Requests: `GET experiments/get` and a
//! one-metric `POST runs/log-batch`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Args, Res, now_ms, parse_ok, str_field};

struct Target {
    label: &'static str,
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    experiment_id: String,
    run_id: String,
    step: u64,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .proxy(None)
        .no_delay(true)
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

impl Target {
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Res<(f64, u16, String)> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let t = Instant::now();
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &self.authorization {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, b) => {
                let mut r = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &self.authorization {
                    r = r.header("Authorization", a);
                }
                r.send(b.map(Value::to_string).unwrap_or_default())
            }
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{method} {path}: reading body: {e}"))?;
        Ok((t.elapsed().as_secs_f64(), status, text))
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Res<(f64, Value)> {
        let (dt, status, text) = self.request(method, path, body)?;
        Ok((dt, parse_ok(path, status, &text)?))
    }

    fn setup(&mut self) -> Res<()> {
        let name = format!("auth-{}-{}-{}", self.label, std::process::id(), now_ms());
        let (_, v) = self.ok("POST", "experiments/create", Some(&json!({"name": name})))?;
        self.experiment_id = str_field(&v, &["experiment_id"])?;
        let (_, v) = self.ok(
            "POST",
            "runs/create",
            Some(&json!({"experiment_id": self.experiment_id, "start_time": now_ms()})),
        )?;
        self.run_id = str_field(&v, &["run", "info", "run_id"])?;
        Ok(())
    }

    /// One timed request of `kind`.
    fn call(&mut self, kind: &str) -> Res<f64> {
        let (dt, _) = match kind {
            "get" => self.ok(
                "GET",
                &format!("experiments/get?experiment_id={}", self.experiment_id),
                None,
            )?,
            _ => {
                self.step += 1;
                let body = json!({"run_id": self.run_id, "metrics": [
                    {"key": "m", "value": 0.5, "timestamp": now_ms(), "step": self.step}]});
                self.ok("POST", "runs/log-batch", Some(&body))?
            }
        };
        Ok(dt)
    }
}

fn quantile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    v[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `auth-overhead --off U --on U --admin-auth "Basic …" --user-auth "Basic …"
/// [--requests 2000] [--rounds 5] [--warmup 200]`
pub fn overhead(args: &Args) -> Res<Value> {
    let requests = args.usize_or("requests", 2000)?.max(100);
    let rounds = args.usize_or("rounds", 5)?.max(1);
    let warmup = args.usize_or("warmup", 200)?;
    let on = args.str("on")?;
    let mut targets = vec![
        Target {
            label: "off",
            base: args.str("off")?.trim_end_matches('/').to_string(),
            authorization: None,
            agent: agent(),
            experiment_id: String::new(),
            run_id: String::new(),
            step: 0,
        },
        Target {
            label: "admin",
            base: on.trim_end_matches('/').to_string(),
            authorization: Some(args.str("admin-auth")?),
            agent: agent(),
            experiment_id: String::new(),
            run_id: String::new(),
            step: 0,
        },
        Target {
            label: "user",
            base: on.trim_end_matches('/').to_string(),
            authorization: Some(args.str("user-auth")?),
            agent: agent(),
            experiment_id: String::new(),
            run_id: String::new(),
            step: 0,
        },
    ];
    for t in &mut targets {
        t.setup()?;
        // An unauthenticated request must be refused by the server with logins.
        if t.authorization.is_some() {
            let probe = Target {
                authorization: None,
                agent: agent(),
                label: "probe",
                base: t.base.clone(),
                experiment_id: t.experiment_id.clone(),
                run_id: String::new(),
                step: 0,
            };
            let (_, status, _) = probe.request(
                "GET",
                &format!("experiments/get?experiment_id={}", t.experiment_id),
                None,
            )?;
            if status != 401 {
                return Err(format!(
                    "the --on server answered {status} without credentials: is --auth on?"
                ));
            }
        }
        for kind in ["get", "log"] {
            for _ in 0..warmup {
                t.call(kind)?;
            }
        }
    }
    let mut out = serde_json::Map::new();
    for kind in ["get", "log"] {
        // per target: (p50 of each round, p99 of each round)
        let mut per: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); targets.len()];
        for _ in 0..rounds {
            for (i, t) in targets.iter_mut().enumerate() {
                let mut lat = Vec::with_capacity(requests);
                for _ in 0..requests {
                    lat.push(t.call(kind)?);
                }
                per[i].0.push(quantile(&mut lat, 0.5));
                per[i].1.push(quantile(&mut lat, 0.99));
            }
        }
        let us = |s: f64| (s * 1e7).round() / 10.0;
        let mut by = serde_json::Map::new();
        let base_p50 = median(per[0].0.clone());
        let base_p99 = median(per[0].1.clone());
        for (i, t) in targets.iter().enumerate() {
            let p50 = median(per[i].0.clone());
            let p99 = median(per[i].1.clone());
            by.insert(
                t.label.to_string(),
                json!({
                    "p50_us": us(p50), "p99_us": us(p99),
                    "added_p50_us": us(p50 - base_p50), "added_p99_us": us(p99 - base_p99),
                    "rounds_p99_us": per[i].1.iter().map(|x| us(*x)).collect::<Vec<_>>(),
                }),
            );
        }
        out.insert(kind.to_string(), Value::Object(by));
    }
    Ok(json!({
        "workload": "auth-overhead",
        "requests_per_round": requests,
        "rounds": rounds,
        "results": out,
    }))
}
