//! `loopml deploy …`: deployments on a running server (apply, status, traffic, switch,
//! promote, rollback, feedback, log).

use std::path::PathBuf;

use clap::Subcommand;

const DEPLOYMENTS: &str = "/api/2.0/loopml/deployments";

/// Deployment subcommands.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Create or replace a deployment from a YAML (or JSON) file; variants load before the
    /// switch, so callers never see a half-applied deployment.
    Apply {
        /// The deployment file
        file: PathBuf,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// List deployments with their strategy and variants.
    List {
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Show a deployment: status, per-variant requests, errors, latency and rewards, events.
    Status {
        /// Deployment name
        name: String,
        /// Print the full JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Set the share of traffic (0-100) of a canary's candidate or a shadow's mirror.
    Traffic {
        /// Deployment name
        name: String,
        /// Percent of requests
        percent: f64,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Blue-green: make the other colour (or --to VARIANT) live at once.
    Switch {
        /// Deployment name
        name: String,
        /// Variant to make live
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Give one variant all traffic (the canary's candidate, the shadow, or --variant).
    Promote {
        /// Deployment name
        name: String,
        /// Variant to promote (needed for ab and bandit)
        #[arg(long)]
        variant: Option<String>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Undo: a canary goes to 0%; otherwise the spec before the last promote/switch returns.
    Rollback {
        /// Deployment name
        name: String,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Remove a deployment and unload its models.
    Delete {
        /// Deployment name
        name: String,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Download a deployment's inference log (Parquet, or JSON rows with --json).
    Log {
        /// Deployment (or model) name
        name: String,
        /// From: epoch ms, 2026-11-23T10:00:00Z, or an age like 15m, 2h, 7d
        #[arg(long)]
        since: Option<String>,
        /// Until (same forms)
        #[arg(long)]
        until: Option<String>,
        /// Only this variant
        #[arg(long)]
        variant: Option<String>,
        /// Join feedback (truth, reward) by request id
        #[arg(long)]
        feedback: bool,
        /// Write Parquet here
        #[arg(long, short = 'o', conflicts_with = "json")]
        out: Option<PathBuf>,
        /// Print JSON rows instead (the last --limit rows)
        #[arg(long)]
        json: bool,
        /// Rows at most (the latest)
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
}

/// One line per variant: name, model, version, requests, errors, p50/p99 and rewards.
fn print_deployment(v: &serde_json::Value) -> anyhow::Result<()> {
    loopml::client::print_out(&deployment_text(v))
}

/// `deploy status` as text: a header line, then one aligned row per variant.
fn deployment_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  strategy={}  status={}",
        v["name"].as_str().unwrap_or(""),
        v["strategy"].as_str().unwrap_or(""),
        v["status"].as_str().unwrap_or("")
    );
    if let Some(r) = v["rollback_reason"].as_str() {
        let _ = writeln!(out, "  rolled back: {r}");
    }
    let policy = &v["spec"]["policy"];
    if let Some(p) = policy["percent"].as_f64() {
        let _ = writeln!(out, "  traffic: {p}%");
    }
    if let Some(a) = policy["active"].as_str() {
        let _ = writeln!(out, "  active: {a}");
    }
    // A table whose columns fit their widest cell; rewards only where a bandit collects them.
    let bandit = v["strategy"].as_str() == Some("bandit");
    let num = |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |f| format!("{f:.3}"));
    let text = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut header = vec![
        "variant", "model", "version", "requests", "errors", "p50 ms", "p99 ms",
    ];
    if bandit {
        header.extend(["rewards", "mean reward"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for var in v["variants"].as_array().into_iter().flatten() {
        let mut row = vec![
            text(&var["name"]),
            text(&var["model"]),
            text(&var["model_version"]),
            text(&var["requests"]),
            text(&var["errors"]),
            num(&var["p50_latency_ms"]),
            num(&var["p99_latency_ms"]),
        ];
        if bandit {
            row.push(text(&var["rewards"]));
            row.push(num(&var["mean_reward"]));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                // Names left-aligned, numbers right-aligned.
                if c < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    out
}

pub fn deploy_command(cmd: DeployCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    let show = |body: String| -> anyhow::Result<()> {
        let v: serde_json::Value = serde_json::from_str(&body).context("unexpected answer")?;
        print_deployment(&v)
    };
    match cmd {
        DeployCommand::Apply { file, server } => {
            let server = loopml::client::server_url(server.server);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            // Parse here too, for the name and an early, local error.
            let spec = loopml_serving::deployments::DeploymentSpec::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let body = loopml::client::send(
                &server,
                "PUT",
                &format!("{DEPLOYMENTS}/{}", spec.name),
                "application/yaml",
                Some(&text),
            )?;
            show(body)
        }
        DeployCommand::List { server } => {
            let server = loopml::client::server_url(server.server);
            let body = loopml::client::get(&server, DEPLOYMENTS, &[])?;
            let v: serde_json::Value = serde_json::from_str(&body).context("unexpected answer")?;
            for d in v["deployments"].as_array().into_iter().flatten() {
                print_deployment(d)?;
            }
            Ok(())
        }
        DeployCommand::Status { name, json, server } => {
            let server = loopml::client::server_url(server.server);
            let body = loopml::client::get(&server, &format!("{DEPLOYMENTS}/{name}"), &[])?;
            if json {
                loopml::client::print_out(&format!("{body}\n"))
            } else {
                show(body)
            }
        }
        DeployCommand::Traffic {
            name,
            percent,
            server,
        } => {
            let server = loopml::client::server_url(server.server);
            let body = serde_json::json!({"percent": percent}).to_string();
            show(loopml::client::send(
                &server,
                "POST",
                &format!("{DEPLOYMENTS}/{name}/traffic"),
                "application/json",
                Some(&body),
            )?)
        }
        DeployCommand::Switch { name, to, server } => {
            let server = loopml::client::server_url(server.server);
            let body = serde_json::json!({"to": to}).to_string();
            show(loopml::client::send(
                &server,
                "POST",
                &format!("{DEPLOYMENTS}/{name}/switch"),
                "application/json",
                Some(&body),
            )?)
        }
        DeployCommand::Promote {
            name,
            variant,
            server,
        } => {
            let server = loopml::client::server_url(server.server);
            let body = serde_json::json!({"variant": variant}).to_string();
            show(loopml::client::send(
                &server,
                "POST",
                &format!("{DEPLOYMENTS}/{name}/promote"),
                "application/json",
                Some(&body),
            )?)
        }
        DeployCommand::Rollback { name, server } => {
            let server = loopml::client::server_url(server.server);
            show(loopml::client::send(
                &server,
                "POST",
                &format!("{DEPLOYMENTS}/{name}/rollback"),
                "application/json",
                None,
            )?)
        }
        DeployCommand::Delete { name, server } => {
            let server = loopml::client::server_url(server.server);
            loopml::client::send(
                &server,
                "DELETE",
                &format!("{DEPLOYMENTS}/{name}"),
                "application/json",
                None,
            )?;
            loopml::client::print_out(&format!("deleted {name}\n"))
        }
        DeployCommand::Log {
            name,
            since,
            until,
            variant,
            feedback,
            out,
            json,
            limit,
            server,
        } => {
            let server = loopml::client::server_url(server.server);
            let mut q: Vec<(&str, String)> = Vec::new();
            for (k, v) in [("since", since), ("until", until), ("variant", variant)] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            if feedback {
                q.push(("feedback", "true".into()));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            let path = format!("{DEPLOYMENTS}/{name}/log");
            if json || out.is_none() {
                q.push(("format", "json".into()));
                let qr: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let body = loopml::client::get(&server, &path, &qr)?;
                return loopml::client::print_out(&format!("{body}\n"));
            }
            let out = out.unwrap_or_default();
            let query: String = q
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    )
                })
                .collect::<Vec<_>>()
                .join("&");
            let full = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            let n = loopml::client::download(&server, &full, &out)?;
            loopml::client::print_out(&format!("wrote {} ({n} bytes)\n", out.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_columns_align_and_rewards_show_only_for_bandits() {
        let v = serde_json::json!({
            "name": "churn", "strategy": "canary", "status": "ok",
            "variants": [
                {"name": "stable", "model": "models:/churn@champion", "model_version": "12",
                 "requests": 1234567, "errors": 0, "p50_latency_ms": 0.25, "p99_latency_ms": 1.5,
                 "rewards": 0, "mean_reward": null},
                {"name": "candidate-with-a-long-name", "model": "/models/a/very/long/path/to/model.onnx",
                 "model_version": "3", "requests": 7, "errors": 1, "p50_latency_ms": 12.0,
                 "p99_latency_ms": 140.25, "rewards": 0, "mean_reward": null}
            ]
        });
        let text = deployment_text(&v);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(!text.contains("reward"), "{text}");
        // Numbers are right-aligned under their header: each row's `requests` cell ends in the
        // column where the header's `requests` ends.
        let end = lines[0].find("requests").unwrap() + "requests".len();
        for (l, want) in lines[1..].iter().zip(["1234567", "7"]) {
            assert_eq!(&l[end - want.len()..end], want, "misaligned:\n{text}");
            assert_eq!(&l[end..end + 1], " ", "misaligned:\n{text}");
        }
        let bandit = serde_json::json!({"name": "b", "strategy": "bandit", "status": "ok",
            "variants": [{"name": "a", "model": "m", "model_version": "1", "requests": 3,
            "errors": 0, "p50_latency_ms": 1.0, "p99_latency_ms": 2.0, "rewards": 2,
            "mean_reward": 0.5}]});
        let t = deployment_text(&bandit);
        assert!(t.contains("mean reward") && t.contains("0.500"), "{t}");
    }
}
