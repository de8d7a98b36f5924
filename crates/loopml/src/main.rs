//! `loopml`: the command line. Parses flags, merges them over env and `loopml.toml`, runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use loopml::{FileConfig, ServerConfig};
use loopml_store::Durability;

mod data_cmd;
mod db_cmd;
mod deploy_cmd;
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
    /// Run the LLM gateway alone: `loopml gateway --config config.yaml`, where the config is
    /// LiteLLM's proxy config.yaml (OpenAI endpoints under /v1). `loopml server
    /// --gateway-config` serves the same beside everything else.
    Gateway(GatewayArgs),
    /// Show how a registered model version was made: datasets → training run → logged model
    /// → version → aliases and stage.
    Lineage(LineageArgs),
    /// Write a model card (purpose, training data, parameters, metrics, signature, lineage,
    /// history) for a registered model version.
    ModelCard(ModelCardArgs),
    /// Versioned datasets: add, list, show and get CSV or Parquet files.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Deployments on a running server: apply a YAML file, watch, shift traffic, switch,
    /// promote, roll back, read the inference log.
    #[command(subcommand)]
    Deploy(deploy_cmd::DeployCommand),
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

#[derive(Debug, Args)]
struct ServerUrl {
    /// The loopml server [default: $LOOPML_SERVER, $MLFLOW_TRACKING_URI or http://127.0.0.1:5000]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Debug, Args)]
struct GatewayArgs {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "LOOPML_HOST")]
    host: Option<String>,
    /// Port to listen on; 0 picks a free port [default: 4000, LiteLLM's]
    #[arg(long, short = 'p', env = "LOOPML_GATEWAY_PORT")]
    port: Option<u16>,
    /// Log filter, e.g. "info" [default: info]
    #[arg(long, env = "LOOPML_LOG")]
    log_level: Option<String>,
    /// Where keys, teams, users and the spend log are kept.
    #[command(flatten)]
    db: db_cmd::DatabaseArgs,
    /// Redis for the admission counters (budgets, rpm, tpm, parallel requests) shared by
    /// several gateway replicas (redis://[user:pass@]host:port[/db]) [default: this process]
    #[arg(long, env = "LOOPML_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// Host names served besides localhost and private addresses, comma-separated
    /// (`*.example.com` patterns; `*`: any). Other Host headers get 403 (DNS rebinding)
    #[arg(long, env = "LOOPML_ALLOWED_HOSTS", value_name = "NAMES")]
    allowed_hosts: Option<String>,
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
    /// Seconds a client may take to send a request's headers or the next chunk of its body;
    /// slower clients (slowloris) are disconnected, and idle keep-alive connections closed
    /// [default: 30]
    #[arg(long, env = "LOOPML_CLIENT_TIMEOUT", value_name = "SECONDS")]
    client_timeout: Option<f64>,
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
    /// Serve the LLM gateway on /v1 with this config: LiteLLM's proxy config.yaml, read
    /// unchanged (model_list, router_settings, litellm_settings, general_settings.master_key)
    #[arg(long, env = "LOOPML_GATEWAY_CONFIG", value_name = "FILE")]
    gateway_config: Option<PathBuf>,
    /// Require a login, as MLflow's `--app-name basic-auth`: HTTP Basic
    /// (MLFLOW_TRACKING_USERNAME/PASSWORD) or a bearer token (MLFLOW_TRACKING_TOKEN); the
    /// admin `admin` gets its password from MLFLOW_AUTH_ADMIN_PASSWORD
    #[arg(long, env = "LOOPML_AUTH")]
    auth: bool,
    /// MLflow's spelling of --auth: the only app is "basic-auth"
    #[arg(long, value_name = "NAME")]
    app_name: Option<String>,
    /// With --auth: what users may do where no grant says otherwise (READ, USE, EDIT, MANAGE
    /// or NO_PERMISSIONS) [default: READ]
    #[arg(long, env = "LOOPML_AUTH_DEFAULT_PERMISSION", value_name = "LEVEL")]
    auth_default_permission: Option<String>,
    /// Host names served besides localhost and private addresses, comma-separated
    /// (`*.example.com` patterns; `*`: any). Other Host headers get 403 (DNS rebinding)
    #[arg(long, env = "LOOPML_ALLOWED_HOSTS", value_name = "NAMES")]
    allowed_hosts: Option<String>,
    /// Addresses registry webhooks and monitor alerts may reach although loopback, link-local
    /// or cloud metadata (refused by default: SSRF), comma-separated: addresses, CIDR blocks,
    /// host names, `*.suffix`, or `*` for any
    #[arg(long, env = "LOOPML_OUTBOUND_ALLOW", value_name = "ADDRESSES")]
    outbound_allow: Option<String>,
}

fn resolve(args: ServerArgs, file: FileConfig) -> anyhow::Result<ServerConfig> {
    let d = ServerConfig::default();
    let f = file.server;
    if let Some(list) = args
        .outbound_allow
        .as_deref()
        .or(f.outbound_allow.as_deref())
    {
        loopml_store::outbound::OutboundPolicy::parse(&[list])
            .map_err(|e| anyhow::anyhow!("--outbound-allow: {e}"))?;
    }
    if let Some(app) = &args.app_name
        && app != "basic-auth"
    {
        anyhow::bail!("--app-name '{app}': the only app is 'basic-auth' (or use --auth)");
    }
    let auth_on = args.auth || args.app_name.is_some() || f.auth.unwrap_or(false);
    let auth = if auth_on {
        let level = args
            .auth_default_permission
            .or(f.auth_default_permission)
            .unwrap_or_else(|| "READ".into());
        let default_permission: loopml_auth::Permission = level
            .to_ascii_uppercase()
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--auth-default-permission: {e}"))?;
        if default_permission == loopml_auth::Permission::Deny {
            anyhow::bail!(
                "--auth-default-permission: DENY is a grant, not a default; use NO_PERMISSIONS"
            );
        }
        Some(loopml::AuthSettings {
            default_permission,
            ..loopml::AuthSettings::default()
        })
    } else {
        None
    };
    Ok(ServerConfig {
        auth,
        allowed_hosts: args.allowed_hosts.or(f.allowed_hosts),
        outbound_allow: args.outbound_allow.or(f.outbound_allow),
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
        gateway_config: args.gateway_config.or(f.gateway_config),
        artifacts_direct_downloads: args.artifacts_direct_downloads
            || f.artifacts_direct_downloads.unwrap_or(false),
        shutdown_delay: std::time::Duration::from_secs_f64(
            args.shutdown_delay
                .or(f.shutdown_delay)
                .unwrap_or(0.0)
                .max(0.0),
        ),
        client_timeout: match args.client_timeout.or(f.client_timeout) {
            Some(s) if s.is_finite() && s > 0.0 => std::time::Duration::from_secs_f64(s),
            Some(s) => {
                anyhow::bail!("--client-timeout must be a positive number of seconds, not {s}")
            }
            None => loopml::DEFAULT_CLIENT_TIMEOUT,
        },
    })
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
    // `loopml gateway --config FILE` takes LiteLLM's config, as `litellm --config` does.
    if let Command::Gateway(args) = &cli.command {
        let config = loopml::ServerConfig {
            host: args.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: args.port.unwrap_or(4000),
            log_level: args.log_level.clone().unwrap_or_else(|| "info".into()),
            gateway_config: cli.config.clone(),
            data_dir: args
                .db
                .data_dir
                .clone()
                .unwrap_or_else(|| loopml::ServerConfig::default().data_dir),
            database_url: args.db.database_url.clone(),
            redis_url: args.redis_url.clone(),
            allowed_hosts: args.allowed_hosts.clone(),
            ..loopml::ServerConfig::default()
        };
        config.addr()?;
        init_logging(&config.log_level);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(loopml::serve_gateway(config));
    }
    let file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            let config = resolve(args, file)?;
            let addr = config.addr()?;
            init_logging(&config.log_level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let _ = addr;
            rt.block_on(loopml::serve_models(config))
        }
        Command::Server(args) => {
            let config = resolve(args, file)?;
            config.addr()?;
            init_logging(&config.log_level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(loopml::serve(config))
        }
        Command::Config(args) => {
            let config = resolve(args, file)?;
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
            match &config.auth {
                Some(a) => println!(
                    "auth        = basic-auth (admin '{}', default {})",
                    a.admin_username, a.default_permission
                ),
                None => println!("auth        = off"),
            }
            println!(
                "allowed_hosts = localhost, private addresses{}",
                config
                    .allowed_hosts
                    .as_deref()
                    .map(|h| format!(", {h}"))
                    .unwrap_or_default()
            );
            println!("outbound    = {}", config.outbound_policy()?);
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
        Command::Data(cmd) => data_cmd::data_command(cmd),
        Command::Db(cmd) => db_cmd::run(cmd, file),
        // Served above, before the loopml.toml file is read.
        Command::Gateway(_) => Ok(()),
        Command::Deploy(cmd) => deploy_cmd::deploy_command(cmd),
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
