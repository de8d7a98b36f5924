//! `loopml`: the command line. Parses flags, merges them over env and `loopml.toml`, runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use loopml::{FileConfig, ServerConfig};
use loopml_store::Durability;

mod db_cmd;
mod monitor_cmd;
mod pipeline_cmd;

/// mimalloc: a server makes many small, short-lived allocations on several threads; glibc's
/// allocator spent ~9% of the serving path's CPU on them (bench/serving), mimalloc about a third.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// loopml: the machine-learning feedback loop in one binary. Tracks experiments and registers
/// models with an MLflow-compatible API (point MLFLOW_TRACKING_URI at it), stores artifacts,
/// records lineage and writes model cards.
#[derive(Debug, Parser)]
#[command(name = "loopml", version, propagate_version = true)]
struct Cli {
    /// Config file (TOML). Defaults to ./loopml.toml when it exists.
    #[arg(long, global = true, env = "LOOPML_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the loopml server (MLflow tracking + model registry APIs, artifact proxy, change
    /// feed and webhooks) on embedded defaults.
    Server(ServerArgs),
    /// Serve models alone (Open Inference Protocol v2 and MLflow's /invocations), without the
    /// tracking store: `loopml serve --model churn=model.onnx`.
    Serve(ServerArgs),
    /// Check the configuration and print the resolved settings.
    Config(ServerArgs),
    /// Show how a registered model version was made: datasets → training run → logged model
    /// → version → aliases and stage.
    Lineage(LineageArgs),
    /// Write a model card (purpose, training data, parameters, metrics, signature, lineage,
    /// history) for a registered model version.
    ModelCard(ModelCardArgs),
    /// Versioned datasets: add, list, show and get CSV or Parquet files.
    #[command(subcommand)]
    Data(DataCommand),
    /// Deployments on a running server: apply a YAML file, watch, shift traffic, switch,
    /// promote, roll back, read the inference log.
    #[command(subcommand)]
    Deploy(DeployCommand),
    /// Monitors on a running server: drift, data quality and performance over a deployment's
    /// inference log, with alerts.
    #[command(subcommand)]
    Monitor(monitor_cmd::MonitorCommand),
    /// Pipelines: run a YAML DAG of steps locally (tracked, cached, with validate, gate,
    /// register and promote steps), check it, or export it for Argo Workflows.
    #[command(subcommand)]
    Pipeline(pipeline_cmd::PipelineCommand),
    /// The metadata database: apply migrations, or copy an embedded SQLite installation onto
    /// PostgreSQL.
    #[command(subcommand)]
    Db(db_cmd::DbCommand),
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Create or replace a deployment from a YAML (or JSON) file; variants load before the
    /// switch, so callers never see a half-applied deployment.
    Apply {
        /// The deployment file
        file: PathBuf,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// List deployments with their strategy and variants.
    List {
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Show a deployment: status, per-variant requests, errors, latency and rewards, events.
    Status {
        /// Deployment name
        name: String,
        /// Print the full JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Set the share of traffic (0-100) of a canary's candidate or a shadow's mirror.
    Traffic {
        /// Deployment name
        name: String,
        /// Percent of requests
        percent: f64,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Blue-green: make the other colour (or --to VARIANT) live at once.
    Switch {
        /// Deployment name
        name: String,
        /// Variant to make live
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Give one variant all traffic (the canary's candidate, the shadow, or --variant).
    Promote {
        /// Deployment name
        name: String,
        /// Variant to promote (needed for ab and bandit)
        #[arg(long)]
        variant: Option<String>,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Undo: a canary goes to 0%; otherwise the spec before the last promote/switch returns.
    Rollback {
        /// Deployment name
        name: String,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Remove a deployment and unload its models.
    Delete {
        /// Deployment name
        name: String,
        #[command(flatten)]
        server: ServerUrl,
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
        server: ServerUrl,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
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
        server: ServerUrl,
    },
    /// List datasets and their versions.
    List {
        /// Only this dataset
        name: Option<String>,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Show a version's schema and profile (NAME, NAME@3 or NAME@latest).
    Show {
        /// The version
        reference: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerUrl,
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
        server: ServerUrl,
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
        server: ServerUrl,
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
        server: ServerUrl,
    },
    /// Propose an expectation suite (YAML, on stdout) from a reference file or version.
    Suggest {
        /// The reference data: a CSV/Parquet file or a stored version (NAME@3)
        data: String,
        /// Suite name [default: the data's name]
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: ServerUrl,
    },
    /// Download a version's file.
    Get {
        /// The version (NAME, NAME@3 or NAME@latest)
        reference: String,
        /// Where to write it
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        server: ServerUrl,
    },
}

#[derive(Debug, Args)]
struct ServerUrl {
    /// The loopml server [default: $LOOPML_SERVER, $MLFLOW_TRACKING_URI or http://127.0.0.1:5000]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Debug, Args)]
struct LineageArgs {
    /// The model version: models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/STAGE or
    /// models:/NAME/latest
    uri: String,
    /// Print JSON instead of a tree
    #[arg(long)]
    json: bool,
    /// The loopml server [default: $LOOPML_SERVER, $MLFLOW_TRACKING_URI or http://127.0.0.1:5000]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Debug, Args)]
struct ModelCardArgs {
    /// The model version: models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/STAGE or
    /// models:/NAME/latest
    uri: String,
    /// Output format: md, html or json
    #[arg(long, default_value = "md")]
    format: String,
    /// Write to this file instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// The loopml server [default: $LOOPML_SERVER, $MLFLOW_TRACKING_URI or http://127.0.0.1:5000]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "LOOPML_HOST")]
    host: Option<String>,
    /// Port to listen on; 0 picks a free port [default: 5000]
    #[arg(long, short = 'p', env = "LOOPML_PORT")]
    port: Option<u16>,
    #[command(flatten)]
    db: db_cmd::DatabaseArgs,
    /// Most database connections this process opens (PostgreSQL), or idle SQLite readers
    /// kept [default: 16 on PostgreSQL, 8 on SQLite]
    #[arg(long, env = "LOOPML_DATABASE_POOL_SIZE", value_name = "N")]
    database_pool_size: Option<usize>,
    /// Commit durability: "normal" survives a killed process (kill -9); "full" also fsyncs
    /// every commit to survive power loss [default: normal]
    #[arg(long, env = "LOOPML_DURABILITY")]
    durability: Option<Durability>,
    /// Log filter, e.g. "info" or "loopml=debug,tower_http=info" [default: info]
    #[arg(long, env = "LOOPML_LOG")]
    log_level: Option<String>,
    /// On SIGTERM, seconds to keep serving with /ready answering 503 before closing the
    /// listener (for load balancers without a preStop hook) [default: 0]
    #[arg(long, env = "LOOPML_SHUTDOWN_DELAY", value_name = "SECONDS")]
    shutdown_delay: Option<f64>,
    /// Serve an ONNX model (a .onnx file, or an MLflow model directory with an onnx flavor) as
    /// NAME: /v2/models/NAME/infer and /invocations (repeatable)
    #[arg(long = "model", value_name = "NAME=PATH")]
    models: Vec<loopml::ModelSpec>,
    /// ONNX Runtime library (libonnxruntime.so, 1.24+) [default: LOOPML_ORT_LIB, else the copy
    /// scripts/setup-ort.sh fetches into .cache/onnxruntime/]
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
    /// Dynamic batching of the --model models: rows per batch at most (0 or 1: off)
    #[arg(long, default_value_t = 0)]
    max_batch_size: usize,
    /// Dynamic batching: how long a request may wait for others, in microseconds
    #[arg(long, default_value_t = 0)]
    max_queue_delay_us: u64,
    /// Dynamic batching: batch sizes run as soon as reached (comma-separated)
    #[arg(long, value_delimiter = ',')]
    preferred_batch_sizes: Vec<usize>,
    /// Requests waiting per model at most when batching; more get 429
    #[arg(long, default_value_t = 1024)]
    max_queue_size: usize,
    /// Serve a deployment file (YAML: name, variants, policy; repeatable). Variants may be
    /// files (relative to the YAML file) or models:/ URIs
    #[arg(long = "deployment", value_name = "FILE")]
    deployments: Vec<PathBuf>,
    /// Do not record requests in the inference log
    #[arg(long)]
    no_inference_log: bool,
    /// Where artifacts live: a folder, s3://bucket/prefix (any S3-compatible server through
    /// AWS_ENDPOINT_URL), gs://bucket/prefix or az://container/prefix; credentials and region
    /// from the provider's usual environment variables [default: artifacts/ in --data-dir]
    #[arg(long, env = "LOOPML_ARTIFACTS_DESTINATION", value_name = "URL")]
    artifacts_destination: Option<String>,
    /// Give clients download URLs signed for the bucket itself (they must be able to reach
    /// it), instead of URLs through this server
    #[arg(long, env = "LOOPML_ARTIFACTS_DIRECT_DOWNLOADS")]
    artifacts_direct_downloads: bool,
    /// Redis for change notes between replicas sharing a PostgreSQL database
    /// (redis://[user:pass@]host:port[/db]): an alias moved or a deployment changed on one
    /// replica reaches the others in milliseconds instead of about a second. Redis being down
    /// only brings back the timers [default: none]
    #[arg(long, env = "LOOPML_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
}

fn resolve(args: ServerArgs, file: FileConfig) -> ServerConfig {
    let d = ServerConfig::default();
    let f = file.server;
    ServerConfig {
        host: args.host.or(f.host).unwrap_or(d.host),
        port: args.port.or(f.port).unwrap_or(d.port),
        data_dir: args.db.data_dir.or(f.data_dir).unwrap_or(d.data_dir),
        database_url: args.db.database_url.or(f.database_url),
        database_pool_size: args.database_pool_size.or(f.database_pool_size),
        durability: args.durability.or(f.durability).unwrap_or(d.durability),
        log_level: args.log_level.or(f.log_level).unwrap_or(d.log_level),
        models: args.models,
        ort_lib: args.ort_lib,
        batching: loopml_serving::batcher::BatchConfig {
            max_batch_size: args.max_batch_size,
            max_queue_delay_us: args.max_queue_delay_us,
            preferred_batch_sizes: args.preferred_batch_sizes,
            max_queue_size: args.max_queue_size,
        },
        deployments: args.deployments,
        inference_log: !args.no_inference_log,
        artifacts_destination: args.artifacts_destination.or(f.artifacts_destination),
        redis_url: args.redis_url.or(f.redis_url),
        artifacts_direct_downloads: args.artifacts_direct_downloads
            || f.artifacts_direct_downloads.unwrap_or(false),
        shutdown_delay: std::time::Duration::from_secs_f64(
            args.shutdown_delay
                .or(f.shutdown_delay)
                .unwrap_or(0.0)
                .max(0.0),
        ),
    }
}

fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or CI output gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Exit status for errors; 1 is kept for "the check found drift / the suite failed".
const EXIT_ERROR: i32 = 2;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(EXIT_ERROR);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            let config = resolve(args, file);
            let addr = config.addr()?;
            init_logging(&config.log_level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let _ = addr;
            rt.block_on(loopml::serve_models(config))
        }
        Command::Server(args) => {
            let config = resolve(args, file);
            config.addr()?;
            init_logging(&config.log_level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(loopml::serve(config))
        }
        Command::Config(args) => {
            let config = resolve(args, file);
            config.addr()?;
            println!("host        = {}", config.host);
            println!("port        = {}", config.port);
            println!("data_dir    = {}", config.data_dir.display());
            let db = config.database_config()?;
            println!("database    = {}", db.backend.describe());
            println!("db_pool     = {}", db.max_readers);
            println!("artifacts   = {}", config.artifacts_location());
            println!(
                "redis       = {}",
                config.redis_url.as_deref().map_or("none", |_| "set")
            );
            println!("durability  = {:?}", config.durability);
            println!("log_level   = {}", config.log_level);
            Ok(())
        }
        Command::Lineage(args) => {
            let server = loopml::client::server_url(args.server);
            let format = if args.json { "json" } else { "text" };
            let body = loopml::client::get(
                &server,
                "/api/2.0/loopml/registry/lineage",
                &[("uri", &args.uri), ("format", format)],
            )?;
            let end = if args.json { "\n" } else { "" };
            loopml::client::print_out(&format!("{body}{end}"))
        }
        Command::Data(cmd) => data_command(cmd),
        Command::Db(cmd) => db_cmd::run(cmd, file),
        Command::Deploy(cmd) => deploy_command(cmd),
        Command::Pipeline(cmd) => {
            let code = pipeline_cmd::run(cmd)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Monitor(cmd) => {
            let code = monitor_cmd::run(cmd)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::ModelCard(args) => {
            let server = loopml::client::server_url(args.server);
            let body = loopml::client::get(
                &server,
                "/api/2.0/loopml/registry/model-card",
                &[("uri", &args.uri), ("format", &args.format)],
            )?;
            match args.output {
                Some(path) => loopml::write_file(&path, body.as_bytes())?,
                None => loopml::client::print_out(&body)?,
            }
            Ok(())
        }
    }
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

fn data_command(cmd: DataCommand) -> anyhow::Result<()> {
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

const DEPLOYMENTS: &str = "/api/2.0/loopml/deployments";

/// One line per variant: name, model, version, requests, errors, p50/p99 and rewards.
fn print_deployment(v: &serde_json::Value) -> anyhow::Result<()> {
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
    let _ = writeln!(
        out,
        "  {:<12} {:<32} {:>7} {:>9} {:>7} {:>9} {:>9} {:>8} {:>7}",
        "variant", "model", "version", "requests", "errors", "p50 ms", "p99 ms", "rewards", "mean"
    );
    let num = |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |f| format!("{f:.3}"));
    for var in v["variants"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<12} {:<32} {:>7} {:>9} {:>7} {:>9} {:>9} {:>8} {:>7}",
            var["name"].as_str().unwrap_or(""),
            var["model"].as_str().unwrap_or(""),
            var["model_version"].as_str().unwrap_or("-"),
            var["requests"],
            var["errors"],
            num(&var["p50_latency_ms"]),
            num(&var["p99_latency_ms"]),
            var["rewards"],
            num(&var["mean_reward"]),
        );
    }
    loopml::client::print_out(&out)
}

fn deploy_command(cmd: DeployCommand) -> anyhow::Result<()> {
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
