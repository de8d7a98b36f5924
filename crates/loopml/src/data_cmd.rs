//! `loopml data …`: dataset versions, profiles, validation, drift and diffs, on a server or on
//! local files.

use std::path::PathBuf;

use clap::Subcommand;

/// Dataset subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Store a CSV or Parquet file as the next version of a dataset (content-addressed: the
    /// same bytes again give the same version) and print NAME@VERSION and its digest.
    Add {
        /// The file
        file: PathBuf,
        /// Dataset name
        #[arg(long)]
        name: String,
        /// Where the data came from (recorded; defaults to the file's path)
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// List datasets and their versions.
    List {
        /// Only this dataset
        name: Option<String>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Show a version's schema and profile (NAME, NAME@3 or NAME@latest).
    Show {
        /// The version
        reference: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Compare a current file with a reference (Evidently's default method per column, or
    /// --method), print a table, optionally write JSON and a self-contained HTML report; exits
    /// with status 1 on dataset drift.
    Drift {
        /// Reference data: a CSV/Parquet file or a stored version (NAME@3)
        #[arg(long)]
        reference: String,
        /// Current data: a CSV/Parquet file or a stored version
        #[arg(long)]
        current: String,
        /// One method for every column (ks, chisquare, z, wasserstein, jensenshannon, psi,
        /// kl_div, hellinger, anderson, cramer_von_mises, ed, mannw, t_test)
        #[arg(long)]
        method: Option<String>,
        /// One threshold for every column (default: the method's)
        #[arg(long)]
        threshold: Option<f64>,
        /// Method for one column, as COLUMN=METHOD (repeatable; overrides --method)
        #[arg(long = "column-method", value_name = "COLUMN=METHOD")]
        column_methods: Vec<String>,
        /// Threshold for one column, as COLUMN=VALUE (repeatable; overrides --threshold)
        #[arg(long = "column-threshold", value_name = "COLUMN=VALUE")]
        column_thresholds: Vec<String>,
        /// Dataset drift when at least this share of columns drifted
        #[arg(long, default_value_t = 0.5)]
        drift_share: f64,
        /// Memory for column values held at once, in MiB (Parquet columns are read in groups)
        #[arg(long, default_value_t = 128)]
        memory_mb: u64,
        /// Only these columns (comma-separated)
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Write the report as JSON here
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the HTML report here
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Check data against an expectation suite (YAML); print a summary, optionally write JSON
    /// and HTML; exits with status 1 when an expectation fails.
    Validate {
        /// The data: a CSV/Parquet file or a stored version (NAME@3)
        data: String,
        /// The suite (YAML)
        #[arg(long)]
        suite: PathBuf,
        /// Write the result as JSON here
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the HTML report here
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// What changed between two datasets: schema, row counts, and per column nulls, distinct
    /// values, mean and the drift verdict.
    Diff {
        /// The older data: a CSV/Parquet file or a stored version (NAME@2)
        old: String,
        /// The newer data: a CSV/Parquet file or a stored version (NAME@3)
        new: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Propose an expectation suite (YAML, on stdout) from a reference file or version.
    Suggest {
        /// The reference data: a CSV/Parquet file or a stored version (NAME@3)
        data: String,
        /// Suite name [default: the data's name]
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Download a version's file.
    Get {
        /// The version (NAME, NAME@3 or NAME@latest)
        reference: String,
        /// Where to write it
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
}

/// `Some(reference)` when `arg` names a stored dataset version rather than a local file; an error
/// when it is neither.
fn stored_reference(arg: &str) -> anyhow::Result<Option<String>> {
    if PathBuf::from(arg).exists() {
        return Ok(None);
    }
    loopml_data::versions::parse_reference(arg).map_err(|_| {
        anyhow::anyhow!("{arg}: no such file, and not a dataset version (NAME or NAME@3)")
    })?;
    let looks_like_file = arg.contains('/')
        || [".csv", ".parquet", ".pq", ".txt"]
            .iter()
            .any(|e| arg.to_ascii_lowercase().ends_with(e));
    if looks_like_file {
        anyhow::bail!("{arg}: no such file");
    }
    Ok(Some(arg.to_string()))
}

/// A local file as given, or a stored dataset version fetched into `tmp`.
fn local_data(
    arg: &str,
    server: &Option<String>,
    tmp: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let Some(_) = stored_reference(arg)? else {
        return Ok(PathBuf::from(arg));
    };
    let (name, _) = loopml_data::versions::parse_reference(arg)?;
    let server = loopml::client::server_url(server.clone());
    let meta = loopml::client::get(&server, &format!("/api/2.0/loopml/datasets/{arg}"), &[])
        .map_err(|e| anyhow::anyhow!("{arg}: not a file here, and as a dataset version: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&meta)?;
    let ext = v["format"].as_str().unwrap_or("csv");
    let out = tmp.join(format!("{name}-{}.{ext}", v["version"]));
    loopml::client::download(
        &server,
        &format!("/api/2.0/loopml/datasets/{arg}/content"),
        &out,
    )?;
    Ok(out)
}

pub fn data_command(cmd: DataCommand) -> anyhow::Result<()> {
    use loopml::client::{download, get, print_out, server_url, upload};
    match cmd {
        DataCommand::Drift {
            reference,
            current,
            method,
            threshold,
            column_methods,
            column_thresholds,
            drift_share,
            memory_mb,
            columns,
            json,
            html,
            server,
        } => {
            let mut per_column_method: std::collections::HashMap<
                String,
                loopml_data::stats::DriftMethod,
            > = std::collections::HashMap::new();
            for spec in &column_methods {
                let (col, m) = split_assignment(spec, "--column-method")?;
                per_column_method.insert(col, m.parse()?);
            }
            let mut per_column_threshold = std::collections::HashMap::new();
            for spec in &column_thresholds {
                let (col, v) = split_assignment(spec, "--column-threshold")?;
                let v: f64 = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--column-threshold {spec}: not a number"))?;
                per_column_threshold.insert(col, v);
            }
            if let (Some(r), Some(c)) = (stored_reference(&reference)?, stored_reference(&current)?)
            {
                // Both sides stored: the server computes the report and keeps it with `current`.
                let url = loopml::client::server_url(server.server);
                let request = serde_json::json!({
                    "reference": r,
                    "columns": columns,
                    "method": method,
                    "threshold": threshold,
                    "per_column_method": per_column_method
                        .iter()
                        .map(|(c, m)| (c.clone(), m.name()))
                        .collect::<std::collections::HashMap<_, _>>(),
                    "per_column_threshold": per_column_threshold,
                    "drift_share": drift_share,
                });
                let answer = loopml::client::post_text(
                    &url,
                    &format!("/api/2.0/loopml/datasets/{c}/drift"),
                    "application/json",
                    &request.to_string(),
                )?;
                let a: serde_json::Value = serde_json::from_str(&answer)?;
                save_check_outputs(&url, &a, "report", json.as_deref(), html.as_deref())?;
                print_out(a["summary"].as_str().unwrap_or(""))?;
                if let Some(id) = a["check"]["id"].as_i64() {
                    print_out(&format!(
                        "stored as check {id} of {c}: {url}/api/2.0/loopml/dataset-checks/{id}?format=html\n"
                    ))?;
                }
                if a["report"]["dataset_drift"].as_bool().unwrap_or(false) {
                    std::process::exit(1);
                }
                return Ok(());
            }
            let tmp = tempdir()?;
            let r = local_data(&reference, &server.server, &tmp)?;
            let c = local_data(&current, &server.server, &tmp)?;
            let opts = loopml_data::drift::DriftOptions {
                columns: (!columns.is_empty()).then_some(columns),
                method: method.as_deref().map(str::parse).transpose()?,
                threshold,
                per_column_method,
                per_column_threshold,
                drift_share,
                memory_budget_bytes: memory_mb.max(1) << 20,
            };
            let report = loopml_data::drift::drift_files(&r, &c, &opts)?;
            let _ = std::fs::remove_dir_all(&tmp);
            if let Some(p) = json {
                loopml::write_file(&p, serde_json::to_string_pretty(&report)?.as_bytes())?;
            }
            if let Some(p) = html {
                loopml::write_file(&p, loopml_data::html::drift_report(&report).as_bytes())?;
            }
            print_out(&report.summary())?;
            if report.dataset_drift {
                std::process::exit(1);
            }
            Ok(())
        }
        DataCommand::Validate {
            data,
            suite,
            json,
            html,
            server,
        } => {
            if let Some(reference) = stored_reference(&data)? {
                // A stored version is validated by the server, which keeps the result with it.
                let url = loopml::client::server_url(server.server);
                let text = std::fs::read_to_string(&suite)
                    .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", suite.display()))?;
                let answer = loopml::client::post_text(
                    &url,
                    &format!("/api/2.0/loopml/datasets/{reference}/validations"),
                    "application/yaml",
                    &text,
                )?;
                let a: serde_json::Value = serde_json::from_str(&answer)?;
                let success = a["result"]["success"].as_bool().unwrap_or(false);
                save_check_outputs(&url, &a, "result", json.as_deref(), html.as_deref())?;
                print_out(a["summary"].as_str().unwrap_or(""))?;
                if let Some(id) = a["check"]["id"].as_i64() {
                    print_out(&format!(
                        "stored as check {id} of {}: {url}/api/2.0/loopml/dataset-checks/{id}?format=html\n",
                        a["check"]["dataset"].as_str().unwrap_or(&reference)
                    ))?;
                }
                if !success {
                    std::process::exit(1);
                }
                return Ok(());
            }
            let tmp = tempdir()?;
            let d = local_data(&data, &server.server, &tmp)?;
            let result = loopml_data::validate::validate_with_suite_file(&d, &suite)?;
            let _ = std::fs::remove_dir_all(&tmp);
            if let Some(p) = json {
                loopml::write_file(
                    &p,
                    serde_json::to_string_pretty(&result.to_json())?.as_bytes(),
                )?;
            }
            if let Some(p) = html {
                loopml::write_file(
                    &p,
                    loopml_data::html::validation_report(&result, &data).as_bytes(),
                )?;
            }
            print_out(&result.summary())?;
            if !result.success {
                std::process::exit(1);
            }
            Ok(())
        }
        DataCommand::Diff {
            old,
            new,
            json,
            server,
        } => {
            if let (Some(o), Some(n)) = (stored_reference(&old)?, stored_reference(&new)?) {
                // Both stored: the server compares them in place.
                let url = server_url(server.server);
                let body = get(
                    &url,
                    &format!("/api/2.0/loopml/datasets/{n}/diff"),
                    &[("against", &o)],
                )?;
                let a: serde_json::Value = serde_json::from_str(&body)?;
                return if json {
                    print_out(&format!("{}\n", serde_json::to_string_pretty(&a["diff"])?))
                } else {
                    print_out(&format!(
                        "{old} → {new}\n{}",
                        a["summary"].as_str().unwrap_or("")
                    ))
                };
            }
            let tmp = tempdir()?;
            let a = local_data(&old, &server.server, &tmp)?;
            let b = local_data(&new, &server.server, &tmp)?;
            let d = loopml_data::diff::diff_files(&a, &b);
            let _ = std::fs::remove_dir_all(&tmp);
            let d = d?;
            if json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(&d)?))
            } else {
                print_out(&format!("{old} → {new}\n{}", d.summary()))
            }
        }
        DataCommand::Suggest { data, name, server } => {
            let tmp = tempdir()?;
            let d = local_data(&data, &server.server, &tmp)?;
            let profile = loopml_data::profile::profile_file(&d)?;
            let _ = std::fs::remove_dir_all(&tmp);
            let name = name.unwrap_or_else(|| {
                data.split('@')
                    .next()
                    .unwrap_or(&data)
                    .rsplit('/')
                    .next()
                    .unwrap_or(&data)
                    .to_string()
            });
            let suite = loopml_data::validate::suggest_suite(&name, &profile);
            print_out(&suite.to_yaml())
        }
        DataCommand::Add {
            file,
            name,
            source,
            server,
        } => {
            loopml_data::versions::validate_name(&name)?;
            let server = server_url(server.server);
            let source = source.unwrap_or_else(|| file.display().to_string());
            let format = match file.extension().and_then(|e| e.to_str()) {
                Some("csv") => "csv",
                Some("parquet") | Some("pq") => "parquet",
                _ => "",
            };
            let body = upload(
                &server,
                &format!("/api/2.0/loopml/datasets/{name}/versions"),
                &[("format", format), ("source", &source)],
                &file,
            )?;
            let v: serde_json::Value = serde_json::from_str(&body)?;
            print_out(&format!(
                "{}@{}  sha256:{}  {} rows × {} columns\n",
                v["name"].as_str().unwrap_or(&name),
                v["version"],
                v["digest"].as_str().unwrap_or(""),
                v["rows"],
                v["columns"]
            ))
        }
        DataCommand::List { name, server } => {
            if let Some(n) = &name {
                loopml_data::versions::validate_name(n)?;
            }
            let server = server_url(server.server);
            let q: Vec<(&str, &str)> = name.as_deref().map(|n| ("name", n)).into_iter().collect();
            let body = get(&server, "/api/2.0/loopml/datasets", &q)?;
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let mut out = format!(
                "{:<32} {:>6} {:>14} {:>12}  {}\n",
                "dataset", "rows", "size", "digest", "source"
            );
            for d in v["versions"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<32} {:>6} {:>14} {:>12}  {}\n",
                    format!("{}@{}", d["name"].as_str().unwrap_or(""), d["version"]),
                    d["rows"],
                    d["size_bytes"],
                    d["digest"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                    d["source"].as_str().unwrap_or("")
                ));
            }
            print_out(&out)
        }
        DataCommand::Show {
            reference,
            json,
            server,
        } => {
            loopml_data::versions::parse_reference(&reference)?;
            let server = server_url(server.server);
            let body = get(
                &server,
                &format!("/api/2.0/loopml/datasets/{reference}"),
                &[],
            )?;
            if json {
                return print_out(&format!("{body}\n"));
            }
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let mut out = format!(
                "{}@{}  sha256:{}\n{} rows, {} columns, {} bytes ({}), source {}\n\n",
                v["name"].as_str().unwrap_or(""),
                v["version"],
                v["digest"].as_str().unwrap_or(""),
                v["rows"],
                v["columns"],
                v["size_bytes"],
                v["format"].as_str().unwrap_or(""),
                v["source"].as_str().unwrap_or("-")
            );
            out.push_str(&format!(
                "{:<24} {:<12} {:>8} {:>9}  {}\n",
                "column", "type", "nulls", "distinct", "summary"
            ));
            for c in v["profile"]["columns"].as_array().into_iter().flatten() {
                let summary = if let Some(n) = c.get("numeric") {
                    format!(
                        "min {} mean {:.4} max {} std {:.4}",
                        n["min"],
                        n["mean"].as_f64().unwrap_or(f64::NAN),
                        n["max"],
                        n["std"].as_f64().unwrap_or(f64::NAN)
                    )
                } else if let Some(k) = c.get("categorical") {
                    let top: Vec<String> = k["top_values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .take(3)
                        .map(|t| format!("{} ({})", t[0].as_str().unwrap_or(""), t[1]))
                        .collect();
                    format!("top {}", top.join(", "))
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "{:<24} {:<12} {:>8} {:>9}  {}\n",
                    c["name"].as_str().unwrap_or(""),
                    c["data_type"].as_str().unwrap_or(""),
                    c["nulls"],
                    c["distinct"],
                    summary
                ));
            }
            print_out(&out)
        }
        DataCommand::Get {
            reference,
            output,
            server,
        } => {
            loopml_data::versions::parse_reference(&reference)?;
            let server = server_url(server.server);
            let n = download(
                &server,
                &format!("/api/2.0/loopml/datasets/{reference}/content"),
                &output,
            )?;
            print_out(&format!("{reference} → {} ({n} bytes)\n", output.display()))
        }
    }
}

/// A fresh private temp folder for downloaded dataset versions.
fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "loopml-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Splits `COLUMN=VALUE` (the part before the last `=` is the column).
fn split_assignment(spec: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match spec.rsplit_once('=') {
        Some((col, v)) if !col.is_empty() && !v.is_empty() => Ok((col.to_string(), v.to_string())),
        _ => anyhow::bail!("{flag} {spec}: expected COLUMN=VALUE"),
    }
}

/// Writes a server-side check's `field` (the result or report) as JSON and fetches its HTML page.
fn save_check_outputs(
    url: &str,
    answer: &serde_json::Value,
    field: &str,
    json: Option<&std::path::Path>,
    html: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(p) = json {
        loopml::write_file(p, serde_json::to_string_pretty(&answer[field])?.as_bytes())?;
    }
    if let Some(p) = html {
        let Some(id) = answer["check"]["id"].as_i64() else {
            anyhow::bail!("the server did not store the check, so it has no HTML report");
        };
        let page = loopml::client::get(
            url,
            &format!("/api/2.0/loopml/dataset-checks/{id}"),
            &[("format", "html")],
        )?;
        loopml::write_file(p, page.as_bytes())?;
    }
    Ok(())
}
