//! `loopml monitor …`: monitors on a running server.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

const MONITORS: &str = "/api/2.0/loopml/monitors";
/// `monitor evaluate`'s exit status when a check could not be evaluated.
const EXIT_CHECK_ERROR: i32 = 3;

/// Monitor subcommands.
#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Create or replace a monitor from a YAML (or JSON) file; suite files it names are read in,
    /// a pipeline path is made absolute.
    Apply {
        /// The monitor file
        file: PathBuf,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Monitors with the latest status of each check (all, or one with its recent alerts).
    Status {
        /// Monitor name (all when absent)
        name: Option<String>,
        /// Print the full JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Evaluate a monitor now; exits 1 when a check is breached, 3 when a check could not be
    /// evaluated (error), 2 when the command itself failed.
    Evaluate {
        /// Monitor name
        name: String,
        /// Print the full JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// A monitor's results over time, newest first.
    Results {
        /// Monitor name
        name: String,
        /// Only this check
        #[arg(long)]
        check: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Alerts, newest first.
    Alerts {
        /// Only this monitor's
        #[arg(long)]
        monitor: Option<String>,
        /// pending, delivered or failed
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Remove a monitor and its results.
    Delete {
        /// Monitor name
        name: String,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
}

fn num(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.4}"))
}

fn result_line(r: &Value) -> String {
    format!(
        "  {:<24} {:<13} {:>10}  {}\n",
        r["check"].as_str().unwrap_or(""),
        r["status"].as_str().unwrap_or(""),
        num(&r["value"]),
        r["message"].as_str().unwrap_or("")
    )
}

fn print_monitor(m: &Value) -> String {
    let spec = &m["monitor"];
    let mut out = format!(
        "{}  deployment {}  reference {}  window {}  every {}\n",
        spec["name"].as_str().unwrap_or(""),
        spec["deployment"].as_str().unwrap_or(""),
        spec["reference"].as_str().unwrap_or(""),
        spec["window"]["rows"]
            .as_u64()
            .map(|r| format!("{r} rows"))
            .or_else(|| spec["window"]["duration"].as_str().map(str::to_string))
            .unwrap_or_default(),
        spec["interval"].as_str().unwrap_or("on demand"),
    );
    let latest = m["latest"].as_array().cloned().unwrap_or_default();
    if latest.is_empty() {
        out.push_str("  not evaluated yet\n");
    }
    for r in &latest {
        out.push_str(&result_line(r));
    }
    for a in m["alerts"].as_array().into_iter().flatten().take(5) {
        out.push_str(&format!(
            "  alert {} {} {} ({} attempts){}\n",
            a["id"],
            a["check"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            a["attempts"],
            a["pipeline"]
                .as_str()
                .map(|p| format!("; pipeline: {p}{}", outcome_of(a)))
                .unwrap_or_default()
        ));
    }
    out
}

/// ` → run <id>: <outcome>` once the alert's pipeline run has ended.
fn outcome_of(a: &Value) -> String {
    match (a["pipeline_run"].as_str(), a["pipeline_outcome"].as_str()) {
        (Some(run), Some(o)) => format!(" → run {run}: {o}"),
        (None, Some(o)) => format!(" → {o}"),
        _ => String::new(),
    }
}

/// Runs a monitor subcommand; returns the process exit code.
pub fn run(cmd: MonitorCommand) -> anyhow::Result<i32> {
    let parse = |body: &str| -> anyhow::Result<Value> {
        serde_json::from_str(body).context("unexpected answer from the server")
    };
    match cmd {
        MonitorCommand::Apply { file, server } => {
            let server = loopml::client::server_url(server.server);
            let spec =
                loopml_monitor::MonitorSpec::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
            let body = serde_json::to_string(&spec)?;
            let v = parse(&loopml::client::send(
                &server,
                "POST",
                MONITORS,
                "application/json",
                Some(&body),
            )?)?;
            loopml::client::print_out(&format!(
                "monitor {} applied ({} checks)\n",
                v["monitor"]["name"].as_str().unwrap_or(""),
                v["monitor"]["checks"].as_array().map_or(0, Vec::len)
            ))?;
            Ok(0)
        }
        MonitorCommand::Status { name, json, server } => {
            let server = loopml::client::server_url(server.server);
            let body = match &name {
                Some(n) => loopml::client::get(&server, &format!("{MONITORS}/{n}"), &[])?,
                None => loopml::client::get(&server, MONITORS, &[])?,
            };
            if json {
                loopml::client::print_out(&format!("{body}\n"))?;
                return Ok(0);
            }
            let v = parse(&body)?;
            let text = match name {
                Some(_) => print_monitor(&v),
                None => {
                    let all = v["monitors"].as_array().cloned().unwrap_or_default();
                    if all.is_empty() {
                        "no monitors\n".to_string()
                    } else {
                        all.iter().map(print_monitor).collect()
                    }
                }
            };
            loopml::client::print_out(&text)?;
            Ok(0)
        }
        MonitorCommand::Evaluate { name, json, server } => {
            let server = loopml::client::server_url(server.server);
            let body = loopml::client::send(
                &server,
                "POST",
                &format!("{MONITORS}/{name}/evaluate"),
                "application/json",
                Some("{}"),
            )?;
            let v = parse(&body)?;
            let e = &v["evaluation"];
            let statuses: Vec<&serde_json::Value> = e["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| &r["status"])
                .collect();
            let breached = statuses.iter().any(|s| *s == "breach");
            let errored = statuses.iter().any(|s| *s == "error");
            if json {
                loopml::client::print_out(&format!("{body}\n"))?;
            } else {
                let mut out = format!(
                    "{}: {} predictions ({} labelled) in {:.3} s\n",
                    name,
                    e["rows"],
                    e["labelled_rows"],
                    e["seconds"].as_f64().unwrap_or(0.0)
                );
                for r in e["results"].as_array().into_iter().flatten() {
                    out.push_str(&result_line(r));
                }
                for a in v["alerts"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "  ALERT {} raised for {}\n",
                        a["id"],
                        a["check"].as_str().unwrap_or("")
                    ));
                }
                loopml::client::print_out(&out)?;
            }
            // 3: a check could not be evaluated (its result is not to be trusted, breach or
            // not); 1: a check breached; 2 stays the command's own failure.
            Ok(if errored {
                EXIT_CHECK_ERROR
            } else {
                i32::from(breached)
            })
        }
        MonitorCommand::Results {
            name,
            check,
            limit,
            server,
        } => {
            let server = loopml::client::server_url(server.server);
            let limit = limit.to_string();
            let mut q = vec![("limit", limit.as_str())];
            if let Some(c) = &check {
                q.push(("check", c));
            }
            let v = parse(&loopml::client::get(
                &server,
                &format!("{MONITORS}/{name}/results"),
                &q,
            )?)?;
            let mut out = String::new();
            for r in v["results"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{} {}",
                    r["evaluated_at"],
                    result_line(r).trim_start()
                ));
            }
            loopml::client::print_out(&out)?;
            Ok(0)
        }
        MonitorCommand::Alerts {
            monitor,
            status,
            server,
        } => {
            let server = loopml::client::server_url(server.server);
            let mut q = Vec::new();
            if let Some(m) = &monitor {
                q.push(("monitor", m.as_str()));
            }
            if let Some(s) = &status {
                q.push(("status", s.as_str()));
            }
            let v = parse(&loopml::client::get(&server, "/api/2.0/loopml/alerts", &q)?)?;
            let mut out = String::new();
            for a in v["alerts"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{} {} {} {} attempts={} {}{}\n",
                    a["id"],
                    a["monitor"].as_str().unwrap_or(""),
                    a["check"].as_str().unwrap_or(""),
                    a["status"].as_str().unwrap_or(""),
                    a["attempts"],
                    a["payload"]["message"].as_str().unwrap_or(""),
                    a["pipeline"]
                        .as_str()
                        .map(|p| format!(" | pipeline: {p}{}", outcome_of(a)))
                        .unwrap_or_default()
                ));
            }
            loopml::client::print_out(&out)?;
            Ok(0)
        }
        MonitorCommand::Delete { name, server } => {
            let server = loopml::client::server_url(server.server);
            loopml::client::send(
                &server,
                "DELETE",
                &format!("{MONITORS}/{name}"),
                "application/json",
                None,
            )?;
            loopml::client::print_out(&format!("monitor {name} deleted\n"))?;
            Ok(0)
        }
    }
}
