//! Running a pipeline: ready steps run concurrently (up to `jobs`), each step resolves its
//! references, computes its cache key, is skipped when the lock file says its inputs are
//! unchanged, and otherwise runs (command or built-in kind) with retries; a failed or rejected
//! step skips everything downstream of it. With a tracking server the run is a parent MLflow
//! run with one child run per step.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::cache::{self, KeyInput, LockEntry, LockFile};
use crate::exec::{Exit, StepLog, run_command};
use crate::spec::{ChampionWithoutMetric, Direction, Kind, Pipeline, ScoreOn, Step, StepKind};
use crate::template::{self, Piece};
use crate::tracker::{DatasetInput, RunInfo, Tracker, now_ms};
use crate::{Error, Result};

mod builtin;

/// Receives each log line of a run as `(step, line)`.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How a pipeline is run.
#[derive(Clone)]
pub struct RunOptions {
    /// The loopml (MLflow) server to track the run on; `None`: nothing is tracked and
    /// `register`, `gate` and `promote` steps fail.
    pub tracking_uri: Option<String>,
    /// Param values that override the file's defaults.
    pub params: BTreeMap<String, String>,
    /// How many steps may run at once.
    pub jobs: usize,
    /// Run every step even when the step cache says its inputs are unchanged.
    pub no_cache: bool,
    /// Extra environment for command steps (also part of their cache keys).
    pub env: Vec<(String, String)>,
    /// Where log lines go.
    pub log: LogSink,
    /// The name of the pipeline's run (default: the pipeline's name).
    pub run_name: Option<String>,
    /// Extra tags on the pipeline's run.
    pub tags: BTreeMap<String, String>,
    /// Stored dataset versions (`NAME@N`) logged as inputs of the pipeline's run, with their
    /// `mlflow.data.context` (e.g. the breached window that started it, as `window`).
    pub datasets: Vec<(String, &'static str)>,
    /// Who started the run (`mlflow.user` of its runs; default: `$USER`).
    pub user: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            tracking_uri: None,
            params: BTreeMap::new(),
            jobs: std::thread::available_parallelism().map_or(1, usize::from),
            no_cache: false,
            env: Vec::new(),
            log: Arc::new(|_: &str, _: &str| {}),
            run_name: None,
            tags: BTreeMap::new(),
            datasets: Vec::new(),
            user: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("tracking_uri", &self.tracking_uri)
            .field("params", &self.params)
            .field("jobs", &self.jobs)
            .field("no_cache", &self.no_cache)
            .field("env", &self.env)
            .field("run_name", &self.run_name)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// How a pipeline run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// Every step succeeded (or was cached).
    Succeeded,
    /// A step failed.
    Failed,
    /// No step failed, but a gate rejected the challenger.
    Rejected,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed (after its retries).
    Failed,
    /// A gate that rejected the challenger.
    Rejected,
    /// Not run: a step upstream of it did not succeed.
    Skipped,
    /// Not run: its inputs are unchanged since its last success.
    Cached,
}

impl StepStatus {
    /// Whether steps downstream of it may run.
    pub fn is_ok(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Cached)
    }

    /// The status as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "SUCCEEDED",
            StepStatus::Failed => "FAILED",
            StepStatus::Rejected => "REJECTED",
            StepStatus::Skipped => "SKIPPED",
            StepStatus::Cached => "CACHED",
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "SUCCEEDED",
            Outcome::Failed => "FAILED",
            Outcome::Rejected => "REJECTED",
        })
    }
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The step's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// How it ended.
    pub status: StepStatus,
    /// Its tracked run in this pipeline run (a cached step gets one too).
    pub run_id: Option<String>,
    /// Wall-clock seconds, all attempts included.
    pub seconds: f64,
    /// Why it failed, was rejected or skipped; a note for a cached step.
    pub message: Option<String>,
    /// The outputs it published (for a cached step: those of the run that executed it).
    pub outputs: BTreeMap<String, String>,
    /// Its cache key (absent for a skipped step).
    pub cache_key: Option<String>,
    /// How many attempts ran (0 when cached or skipped).
    pub attempts: u32,
}

/// What happened to a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline's tracked (parent) run.
    pub run_id: Option<String>,
    /// The experiment the runs went to.
    pub experiment_id: Option<String>,
    /// How the run ended.
    pub outcome: Outcome,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// One report per step, in file order.
    pub steps: Vec<StepReport>,
}

impl RunReport {
    /// The report of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The process exit code for this outcome: 0 succeeded, 1 failed, 3 rejected.
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Succeeded => 0,
            Outcome::Failed => 1,
            Outcome::Rejected => 3,
        }
    }
}

/// Shared by every step of one run.
struct Ctx {
    p: Pipeline,
    params: BTreeMap<String, String>,
    /// The pipeline's env (resolved) then the run options' env.
    env: Vec<(String, String)>,
    tracker: Option<Arc<Tracker>>,
    experiment_id: Option<String>,
    parent_run_id: Option<String>,
    parent_artifact_uri: Option<String>,
    log: LogSink,
    no_cache: bool,
    /// `mlflow.user` of every run.
    user: String,
}

/// What a step task is given.
struct Job {
    index: usize,
    /// Outputs of every step upstream of it.
    upstream: BTreeMap<String, BTreeMap<String, String>>,
    /// Keys of its direct needs.
    upstream_keys: Vec<(String, String)>,
    /// Its lock entry from the last success, if any.
    cached: Option<LockEntry>,
}

/// What a step task gives back.
struct Done {
    index: usize,
    report: StepReport,
    /// A new lock entry when a cacheable step ran and succeeded.
    lock: Option<LockEntry>,
}

/// One attempt's result.
enum Attempt {
    Ok(BTreeMap<String, String>),
    Rejected(String, BTreeMap<String, String>),
    Failed(String),
}

/// A step's fields with references resolved.
enum Resolved {
    Run {
        command: String,
        inputs: Vec<String>,
        outputs: Vec<String>,
    },
    Validate {
        data: String,
        suite: String,
    },
    Register {
        model: String,
        run_id: String,
        artifact: String,
    },
    Gate {
        model: String,
        alias: String,
        challenger: String,
        metric: String,
        margin: f64,
        direction: Direction,
        champion_without_metric: ChampionWithoutMetric,
        score_on: Option<Box<ScoreOn>>,
    },
    Promote {
        model: String,
        alias: String,
        version: String,
    },
}

impl Resolved {
    /// The fields as (name, value), logged as the step run's params and hashed into its key.
    fn config(&self) -> Vec<(String, String)> {
        let kv = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        match self {
            Resolved::Run {
                command,
                inputs,
                outputs,
            } => kv(&[
                ("command", command),
                ("inputs", &inputs.join("\n")),
                ("outputs", &outputs.join("\n")),
            ]),
            Resolved::Validate { data, suite } => kv(&[("data", data), ("suite", suite)]),
            Resolved::Register {
                model,
                run_id,
                artifact,
            } => kv(&[
                ("model", model),
                ("from_run", run_id),
                ("artifact", artifact),
            ]),
            Resolved::Gate {
                model,
                alias,
                challenger,
                metric,
                margin,
                direction,
                champion_without_metric,
                score_on,
            } => kv(&[
                ("model", model),
                ("alias", alias),
                ("challenger", challenger),
                ("metric", metric),
                ("margin", &margin.to_string()),
                (
                    "direction",
                    match direction {
                        Direction::Max => "max",
                        Direction::Min => "min",
                    },
                ),
                (
                    "champion_without_metric",
                    match champion_without_metric {
                        ChampionWithoutMetric::Reject => "reject",
                        ChampionWithoutMetric::Pass => "pass",
                    },
                ),
            ])
            .into_iter()
            .chain(score_on.as_ref().map(|o| {
                (
                    "score_on".to_string(),
                    serde_json::to_string(o).unwrap_or_default(),
                )
            }))
            .collect(),
            Resolved::Promote {
                model,
                alias,
                version,
            } => kv(&[("model", model), ("alias", alias), ("version", version)]),
        }
    }
}

fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Runs a blocking tracker call on the blocking pool.
async fn track<T, F>(t: &Arc<Tracker>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Tracker) -> Result<T> + Send + 'static,
{
    let t = t.clone();
    let base = t.base().to_string();
    tokio::task::spawn_blocking(move || f(&t))
        .await
        .map_err(|e| Error::Tracking {
            uri: base,
            call: "client".into(),
            message: e.to_string(),
        })?
}

/// Runs blocking file work (digests, validation) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

fn secs(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

impl Ctx {
    /// Checks the options and sets up what every step shares (not the parent run).
    async fn new(p: &Pipeline, opts: &RunOptions) -> Result<Self> {
        let params = p.resolve_params(&opts.params)?;
        for (k, _) in &opts.env {
            if !is_env_name(k) {
                return Err(Error::Options(format!(
                    "`{k}` is not a valid environment variable name"
                )));
            }
        }
        let by_param = |piece: &Piece| match piece {
            Piece::Param(n) => params.get(n).cloned(),
            _ => None,
        };
        let invalid = |message: String| Error::Invalid {
            file: p.file.display().to_string(),
            message,
        };
        let mut env = Vec::new();
        for (k, v) in &p.env {
            let value =
                template::render(v, &by_param).map_err(|m| invalid(format!("env `{k}`: {m}")))?;
            env.push((k.clone(), value));
        }
        env.extend(opts.env.iter().cloned());
        let experiment = template::render(&p.experiment, &by_param)
            .map_err(|m| invalid(format!("field `experiment`: {m}")))?;
        let tracker = opts
            .tracking_uri
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| Arc::new(Tracker::new(u)));
        let experiment_id = match &tracker {
            Some(t) => Some(track(t, move |t| t.experiment_id(&experiment)).await?),
            None => None,
        };
        Ok(Self {
            p: p.clone(),
            params,
            env,
            tracker,
            experiment_id,
            parent_run_id: None,
            parent_artifact_uri: None,
            log: opts.log.clone(),
            no_cache: opts.no_cache,
            user: opts
                .user
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .or_else(|| std::env::var("LOGNAME").ok())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "unknown".to_string()),
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.p.dir.join(rel)
    }
}

/// Runs a pipeline to the end and reports what happened to each step. Errors are for what
/// stops the run from starting (params, options, an unreachable tracking server); a step that
/// fails is a `Failed` outcome, not an error.
pub async fn run(p: &Pipeline, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let mut ctx = Ctx::new(p, opts).await?;
    if let (Some(t), Some(exp)) = (&ctx.tracker, &ctx.experiment_id) {
        let name = opts.run_name.clone().unwrap_or_else(|| p.name.clone());
        let mut tags = vec![
            ("loopml.pipeline".to_string(), p.name.clone()),
            (
                "loopml.pipeline.file".to_string(),
                p.file.display().to_string(),
            ),
        ];
        tags.push(("mlflow.user".to_string(), ctx.user.clone()));
        tags.extend(opts.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        let windows = opts.datasets.clone();
        let params: Vec<(String, String)> = ctx
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let exp = exp.clone();
        let parent = track(t, move |t| {
            let run = t.create_run(&exp, &name, &tags)?;
            t.log_batch(&run.run_id, &params, &[], &[])?;
            let inputs = windows
                .iter()
                .map(|(r, context)| t.dataset_version(r, context))
                .collect::<Result<Vec<_>>>()?;
            t.log_inputs(&run.run_id, &inputs)?;
            Ok(run)
        })
        .await?;
        ctx.parent_run_id = Some(parent.run_id);
        ctx.parent_artifact_uri = Some(parent.artifact_uri);
    }
    let ctx = Arc::new(ctx);
    let n = p.steps.len();
    let needs = p.need_indices();
    let order = p.topo_order();
    let lock_path = p.lock_path();
    let mut lock = LockFile::read(&lock_path, &p.name);
    let mut done: Vec<Option<StepReport>> = vec![None; n];
    let mut running = vec![false; n];
    let mut set = JoinSet::new();
    let mut task_index = HashMap::new();
    let jobs = opts.jobs.max(1);
    loop {
        for &i in &order {
            if running[i] || done[i].is_some() {
                continue;
            }
            let blocked = needs[i]
                .iter()
                .find_map(|&d| done[d].as_ref().filter(|r| !r.status.is_ok()));
            if let Some(up) = blocked {
                let why = match up.status {
                    StepStatus::Skipped => "was skipped",
                    StepStatus::Rejected => "rejected the challenger",
                    _ => "failed",
                };
                let message = format!("upstream step `{}` {why}", up.name);
                (ctx.log)(&p.steps[i].name, &format!("loopml: SKIPPED: {message}"));
                done[i] = Some(StepReport {
                    name: p.steps[i].name.clone(),
                    kind: p.steps[i].kind.kind(),
                    status: StepStatus::Skipped,
                    run_id: None,
                    seconds: 0.0,
                    message: Some(message),
                    outputs: BTreeMap::new(),
                    cache_key: None,
                    attempts: 0,
                });
                continue;
            }
            let ready = needs[i].iter().all(|&d| done[d].is_some());
            if !ready || set.len() >= jobs {
                continue;
            }
            let ancestors = p.ancestors(&p.steps[i].name);
            let upstream = done
                .iter()
                .flatten()
                .filter(|r| ancestors.contains(&r.name))
                .map(|r| (r.name.clone(), r.outputs.clone()))
                .collect();
            let upstream_keys = needs[i]
                .iter()
                .filter_map(|&d| done[d].as_ref())
                .map(|r| (r.name.clone(), r.cache_key.clone().unwrap_or_default()))
                .collect();
            let job = Job {
                index: i,
                upstream,
                upstream_keys,
                cached: lock.steps.get(&p.steps[i].name).cloned(),
            };
            running[i] = true;
            let handle = set.spawn(execute(ctx.clone(), job));
            task_index.insert(handle.id(), i);
        }
        let Some(joined) = set.join_next_with_id().await else {
            break;
        };
        let finished = match joined {
            Ok((_, d)) => d,
            Err(e) => {
                let i = task_index.get(&e.id()).copied().unwrap_or(0);
                Done {
                    index: i,
                    report: StepReport {
                        name: p.steps[i].name.clone(),
                        kind: p.steps[i].kind.kind(),
                        status: StepStatus::Failed,
                        run_id: None,
                        seconds: 0.0,
                        message: Some(format!("internal error: {e}")),
                        outputs: BTreeMap::new(),
                        cache_key: None,
                        attempts: 0,
                    },
                    lock: None,
                }
            }
        };
        running[finished.index] = false;
        if let Some(entry) = finished.lock {
            lock.steps.insert(finished.report.name.clone(), entry);
            let (l, path) = (lock.clone(), lock_path.clone());
            let written = blocking(move || l.write(&path)).await;
            if let Some(Err(e)) = written {
                (ctx.log)(&finished.report.name, &format!("loopml: warning: {e}"));
            }
        }
        done[finished.index] = Some(finished.report);
    }
    let steps: Vec<StepReport> = done
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| StepReport {
                name: p.steps[i].name.clone(),
                kind: p.steps[i].kind.kind(),
                status: StepStatus::Skipped,
                run_id: None,
                seconds: 0.0,
                message: Some("not reached".into()),
                outputs: BTreeMap::new(),
                cache_key: None,
                attempts: 0,
            })
        })
        .collect();
    let outcome = if steps.iter().any(|s| s.status == StepStatus::Failed) {
        Outcome::Failed
    } else if steps.iter().any(|s| s.status == StepStatus::Rejected) {
        Outcome::Rejected
    } else {
        Outcome::Succeeded
    };
    let mut report = RunReport {
        pipeline: p.name.clone(),
        run_id: ctx.parent_run_id.clone(),
        experiment_id: ctx.experiment_id.clone(),
        outcome,
        seconds: secs(started),
        steps,
    };
    if let Err(e) = finish_tracking(&ctx, &mut report).await {
        tracing::warn!("pipeline {}: {e}", p.name);
        (ctx.log)(&p.name, &format!("loopml: warning: {e}"));
    }
    Ok(report)
}

/// Records skipped steps as KILLED child runs and ends the parent run with the outcome.
async fn finish_tracking(ctx: &Ctx, report: &mut RunReport) -> Result<()> {
    let (Some(t), Some(exp), Some(parent)) = (&ctx.tracker, &ctx.experiment_id, &ctx.parent_run_id)
    else {
        return Ok(());
    };
    for s in report.steps.iter_mut() {
        if s.status != StepStatus::Skipped {
            continue;
        }
        let tags = step_tags(ctx, &s.name, s.kind, None)
            .into_iter()
            .chain([
                ("loopml.status".to_string(), "SKIPPED".to_string()),
                (
                    "loopml.message".to_string(),
                    s.message.clone().unwrap_or_default(),
                ),
            ])
            .collect::<Vec<_>>();
        let (exp, name) = (exp.clone(), s.name.clone());
        let run = track(t, move |t| {
            let r = t.create_run(&exp, &name, &tags)?;
            t.end_run(&r.run_id, "KILLED")?;
            Ok(r)
        })
        .await?;
        s.run_id = Some(run.run_id);
    }
    let status = match report.outcome {
        Outcome::Failed => "FAILED",
        Outcome::Succeeded | Outcome::Rejected => "FINISHED",
    };
    let json = serde_json::to_vec_pretty(&*report).unwrap_or_default();
    let tags = vec![("loopml.outcome".to_string(), report.outcome.to_string())];
    let parent = parent.clone();
    let root = ctx.parent_artifact_uri.clone().unwrap_or_default();
    track(t, move |t| {
        t.log_batch(&parent, &[], &tags, &[])?;
        t.upload(&root, "pipeline/report.json", json)?;
        t.end_run(&parent, status)
    })
    .await
}

/// Whether a step input is code (a script, notebook, config or requirements file) rather than
/// data, by its extension.
fn is_code(rel: &str) -> bool {
    let name = Path::new(rel)
        .file_name()
        .map(|f| f.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.starts_with("requirements") && name.ends_with(".txt") {
        return true;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    matches!(
        ext,
        "py" | "ipynb"
            | "r"
            | "jl"
            | "sh"
            | "bash"
            | "zsh"
            | "js"
            | "ts"
            | "rb"
            | "scala"
            | "java"
            | "go"
            | "rs"
            | "sql"
            | "yaml"
            | "yml"
            | "toml"
            | "cfg"
            | "ini"
            | "lock"
    ) || name == "dockerfile"
        || name == "makefile"
}

fn step_tags(ctx: &Ctx, step: &str, kind: Kind, key: Option<&str>) -> Vec<(String, String)> {
    let mut tags = vec![
        ("loopml.pipeline".to_string(), ctx.p.name.clone()),
        ("loopml.step".to_string(), step.to_string()),
        ("loopml.step.kind".to_string(), kind.to_string()),
        ("mlflow.user".to_string(), ctx.user.clone()),
    ];
    if let Some(parent) = &ctx.parent_run_id {
        tags.push(("mlflow.parentRunId".to_string(), parent.clone()));
    }
    if let Some(k) = key {
        tags.push(("loopml.cache_key".to_string(), k.to_string()));
    }
    tags
}

/// Runs one step to its end; never fails (a failure is the report's status).
async fn execute(ctx: Arc<Ctx>, job: Job) -> Done {
    let started = Instant::now();
    let step = &ctx.p.steps[job.index];
    let log = StepLog::new(&step.name, ctx.log.clone());
    let mut report = StepReport {
        name: step.name.clone(),
        kind: step.kind.kind(),
        status: StepStatus::Failed,
        run_id: None,
        seconds: 0.0,
        message: None,
        outputs: BTreeMap::new(),
        cache_key: None,
        attempts: 0,
    };
    let fail = |mut report: StepReport, message: String, log: &StepLog| {
        log.line(&format!("loopml: FAILED: {message}"));
        report.status = StepStatus::Failed;
        report.message = Some(message);
        report.seconds = secs(started);
        Done {
            index: job.index,
            report,
            lock: None,
        }
    };
    // Resolve references, hash the input files and compute the cache key; a failure here is
    // the step's failure (it still gets a run when tracked).
    let prepared = prepare(&ctx, step, &job).await;
    let (resolved, inputs, key) = match prepared {
        Ok((r, i, k)) => (Some(r), i, Some(k)),
        Err(m) => {
            report.message = Some(m);
            (None, Vec::new(), None)
        }
    };
    report.cache_key = key.clone();
    let hit = match (&job.cached, &key, step.cache && !ctx.no_cache) {
        (Some(entry), Some(key), true) if &entry.key == key => cache_valid(&ctx, entry).await,
        _ => false,
    };
    let mut run: Option<RunInfo> = None;
    if let (Some(t), Some(exp)) = (&ctx.tracker, &ctx.experiment_id) {
        let (exp, name) = (exp.clone(), step.name.clone());
        let config = resolved.as_ref().map(Resolved::config).unwrap_or_default();
        // Inputs that are code (scripts, notebooks, configs) are the step's code, kept as a tag
        // with their digests; the others are the data it read, logged as dataset inputs.
        let (code, data): (Vec<_>, Vec<_>) = inputs.iter().partition(|(rel, _)| is_code(rel));
        let datasets: Vec<DatasetInput> = data
            .iter()
            .map(|(rel, digest)| DatasetInput {
                name: Path::new(rel)
                    .file_name()
                    .map_or_else(|| rel.clone(), |f| f.to_string_lossy().into_owned()),
                digest: digest.chars().take(12).collect(),
                source: ctx.path(rel).display().to_string(),
                source_type: "local",
                context: "input",
            })
            .collect();
        let mut tags = step_tags(&ctx, &step.name, step.kind.kind(), key.as_deref());
        if !code.is_empty() {
            let list: Vec<serde_json::Value> = code
                .iter()
                .map(|(rel, digest)| serde_json::json!({"path": rel, "digest": digest}))
                .collect();
            tags.push((
                "loopml.code".to_string(),
                serde_json::Value::Array(list).to_string(),
            ));
        }
        if hit {
            tags.push(("loopml.cached".into(), "true".into()));
            if let Some(orig) = job.cached.as_ref().and_then(|e| e.run_id.clone()) {
                tags.push(("loopml.cached_from".into(), orig));
            }
        }
        let created = track(t, move |t| {
            let r = t.create_run(&exp, &name, &tags)?;
            t.log_batch(&r.run_id, &config, &[], &[])?;
            t.log_inputs(&r.run_id, &datasets)?;
            Ok(r)
        })
        .await;
        match created {
            Ok(r) => {
                report.run_id = Some(r.run_id.clone());
                run = Some(r);
            }
            Err(e) => return fail(report, e.to_string(), &log),
        }
    }
    let (Some(resolved), Some(key)) = (resolved, key) else {
        let m = report.message.clone().unwrap_or_default();
        log.line(&format!("loopml: FAILED: {m}"));
        report.seconds = secs(started);
        if let Err(e) = end_step_run(&ctx, run.as_ref(), StepStatus::Failed, Some(&m), &log).await {
            tracing::warn!("step {}: {e}", step.name);
        }
        return Done {
            index: job.index,
            report,
            lock: None,
        };
    };

    if hit {
        let entry = job.cached.clone().unwrap_or_default();
        let from = entry
            .run_id
            .as_deref()
            .map(|r| format!(" (run {r})"))
            .unwrap_or_default();
        let message = format!("inputs unchanged since the last success{from}; not run");
        log.line(&format!("loopml: CACHED: {message}"));
        report.status = StepStatus::Cached;
        report.message = Some(message);
        report.outputs = entry.outputs;
        report.seconds = secs(started);
        let ended = end_step_run(&ctx, run.as_ref(), StepStatus::Cached, None, &log).await;
        if let Err(e) = ended {
            return fail(report, e.to_string(), &log);
        }
        return Done {
            index: job.index,
            report,
            lock: None,
        };
    }

    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        let r = match &resolved {
            // A command enforces its own timeout (and kills its process group).
            Resolved::Run { .. } => attempt_step(&ctx, step, &resolved, run.as_ref(), &log).await,
            _ => tokio::time::timeout(
                step.timeout,
                attempt_step(&ctx, step, &resolved, run.as_ref(), &log),
            )
            .await
            .unwrap_or_else(|_| {
                Attempt::Failed(format!("timed out after {}", human(step.timeout)))
            }),
        };
        match r {
            Attempt::Failed(m) if attempt <= step.retries => {
                log.line(&format!(
                    "loopml: attempt {attempt} failed: {m}; retrying ({attempt}/{})",
                    step.retries
                ));
            }
            other => break other,
        }
    };
    report.attempts = attempt;
    let (status, message, mut outputs) = match result {
        Attempt::Ok(o) => (StepStatus::Succeeded, None, o),
        Attempt::Rejected(m, o) => (StepStatus::Rejected, Some(m), o),
        Attempt::Failed(m) => (StepStatus::Failed, Some(m), BTreeMap::new()),
    };
    if let Some(r) = &run {
        outputs
            .entry("run_id".into())
            .or_insert_with(|| r.run_id.clone());
    }
    // A cacheable step that succeeded: remember the digests of what it produced.
    let mut lock = None;
    if let (StepStatus::Succeeded, Resolved::Run { outputs: files, .. }, true) =
        (status, &resolved, step.cache)
    {
        let (dir, files) = (ctx.p.dir.clone(), files.clone());
        let digests = blocking(move || {
            files
                .into_iter()
                .map(|f| cache::digest_path(&dir.join(&f)).map(|d| (f, d)))
                .collect::<std::io::Result<BTreeMap<_, _>>>()
        })
        .await;
        if let Some(Ok(files)) = digests {
            lock = Some(LockEntry {
                key: key.clone(),
                files,
                outputs: outputs.clone(),
                run_id: outputs.get("run_id").cloned(),
                tracking_uri: ctx.tracker.as_ref().map(|t| t.base().to_string()),
                finished_ms: now_ms(),
            });
        }
    }
    report.status = status;
    report.outputs = outputs;
    report.message = message.clone();
    report.seconds = secs(started);
    match status {
        StepStatus::Succeeded => {
            log.line(&format!("loopml: SUCCEEDED in {:.1}s", report.seconds));
        }
        StepStatus::Rejected => {
            log.line(&format!(
                "loopml: REJECTED: {}",
                message.clone().unwrap_or_default()
            ));
        }
        _ => log.line(&format!(
            "loopml: FAILED: {}",
            message.clone().unwrap_or_default()
        )),
    }
    if let Err(e) = end_step_run(&ctx, run.as_ref(), status, message.as_deref(), &log).await {
        log.line(&format!("loopml: FAILED: {e}"));
        report.status = StepStatus::Failed;
        report.message = Some(e.to_string());
        lock = None;
    }
    Done {
        index: job.index,
        report,
        lock,
    }
}

/// A step's resolved fields, input digests and cache key.
async fn prepare(
    ctx: &Ctx,
    step: &Step,
    job: &Job,
) -> std::result::Result<(Resolved, Vec<(String, String)>, String), String> {
    let needs_server = matches!(
        step.kind,
        StepKind::Register(_) | StepKind::Gate(_) | StepKind::Promote(_)
    );
    if needs_server && ctx.tracker.is_none() {
        return Err(format!(
            "`{}` steps need a loopml server: run with a tracking server (--server or \
             MLFLOW_TRACKING_URI) so the registry can be reached",
            step.kind.kind()
        ));
    }
    let resolved = resolve(ctx, step, &job.upstream)?;
    // Digests of the files the step reads: they key the cache and are logged as inputs.
    let input_paths: Vec<String> = match &resolved {
        Resolved::Run { inputs, .. } => inputs.clone(),
        Resolved::Validate { data, suite } => vec![data.clone(), suite.clone()],
        _ => Vec::new(),
    };
    let dir = ctx.p.dir.clone();
    let inputs = blocking(move || {
        input_paths
            .into_iter()
            .map(|rel| {
                let full = dir.join(&rel);
                cache::digest_path(&full)
                    .map(|d| (rel.clone(), d))
                    .map_err(|e| format!("input `{rel}` ({}): {e}", full.display()))
            })
            .collect::<std::result::Result<Vec<_>, String>>()
    })
    .await
    .unwrap_or_else(|| Err("internal error while reading inputs".into()))?;
    let key = cache::step_key(&KeyInput {
        kind: step.kind.kind().as_str(),
        config: resolved.config(),
        params: &ctx.params,
        env: ctx.env.clone(),
        inputs: inputs.clone(),
        upstream: job.upstream_keys.clone(),
    });
    Ok((resolved, inputs, key))
}

/// Whether a lock entry may stand in for running the step now: its output files still hold
/// what the step produced, and (when tracked) it ran against the same server.
async fn cache_valid(ctx: &Ctx, entry: &LockEntry) -> bool {
    if let Some(t) = &ctx.tracker
        && (entry.tracking_uri.as_deref() != Some(t.base()) || entry.run_id.is_none())
    {
        return false;
    }
    let (dir, files) = (ctx.p.dir.clone(), entry.files.clone());
    blocking(move || {
        files
            .iter()
            .all(|(f, d)| cache::digest_path(&dir.join(f)).is_ok_and(|now| &now == d))
    })
    .await
    .unwrap_or(false)
}

/// Tags the step run with its status, uploads its log and ends it.
async fn end_step_run(
    ctx: &Ctx,
    run: Option<&RunInfo>,
    status: StepStatus,
    message: Option<&str>,
    log: &StepLog,
) -> Result<()> {
    let (Some(t), Some(run)) = (&ctx.tracker, run) else {
        return Ok(());
    };
    let mut tags = vec![("loopml.status".to_string(), status.to_string())];
    if let Some(m) = message {
        tags.push(("loopml.message".to_string(), m.chars().take(5000).collect()));
    }
    let mlflow_status = match status {
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "KILLED",
        _ => "FINISHED",
    };
    let (run, text, step) = (run.clone(), log.text(), log.step().to_string());
    let uploaded = track(t, move |t| {
        t.log_batch(&run.run_id, &[], &tags, &[])?;
        let up = t.upload(
            &run.artifact_uri,
            &format!("logs/{step}.txt"),
            text.into_bytes(),
        );
        t.end_run(&run.run_id, mlflow_status)?;
        Ok(up)
    })
    .await?;
    if let Err(e) = uploaded {
        tracing::warn!("step log upload: {e}");
    }
    Ok(())
}

/// Resolves a step's fields against the params and upstream outputs.
fn resolve(
    ctx: &Ctx,
    step: &Step,
    upstream: &BTreeMap<String, BTreeMap<String, String>>,
) -> std::result::Result<Resolved, String> {
    let lookup = |piece: &Piece| match piece {
        Piece::Param(n) => ctx.params.get(n).cloned(),
        Piece::Output { step, key } => upstream.get(step).and_then(|o| o.get(key)).cloned(),
        Piece::Text(_) => None,
    };
    let r = |field: &str, v: &str| {
        template::render(v, &lookup).map_err(|m| format!("field `{field}`: {m}"))
    };
    // A field naming an upstream step stands for that step's output `key`.
    let output_of = |field: &str, v: &str, key: &str, literal_ok: bool| {
        let v = r(field, v)?;
        if let Some(o) = upstream.get(&v) {
            return o
                .get(key)
                .cloned()
                .ok_or_else(|| format!("field `{field}`: step `{v}` published no `{key}`"));
        }
        if !literal_ok || v.parse::<u64>().is_ok_and(|n| n > 0) {
            return Ok(v);
        }
        Err(format!(
            "field `{field}`: `{v}` is neither an upstream step nor a version number"
        ))
    };
    Ok(match &step.kind {
        StepKind::Run(s) => Resolved::Run {
            command: r("run", &s.command)?,
            inputs: s
                .inputs
                .iter()
                .enumerate()
                .map(|(i, f)| r(&format!("inputs[{i}]"), f))
                .collect::<std::result::Result<_, _>>()?,
            outputs: s
                .outputs
                .iter()
                .enumerate()
                .map(|(i, f)| r(&format!("outputs[{i}]"), f))
                .collect::<std::result::Result<_, _>>()?,
        },
        StepKind::Validate(v) => Resolved::Validate {
            data: r("validate.data", &v.data)?,
            suite: r("validate.suite", &v.suite)?,
        },
        StepKind::Register(g) => Resolved::Register {
            model: r("register.model", &g.model)?,
            run_id: output_of("register.from", &g.from, "run_id", false)?,
            artifact: r("register.artifact", &g.artifact)?,
        },
        StepKind::Gate(g) => Resolved::Gate {
            model: r("gate.model", &g.model)?,
            alias: r("gate.alias", &g.alias)?,
            challenger: output_of("gate.challenger", &g.challenger, "version", true)?,
            metric: r("gate.metric", &g.metric)?,
            margin: g.margin,
            direction: g.direction,
            champion_without_metric: g.champion_without_metric,
            score_on: match &g.score_on {
                Some(on) => Some(Box::new(ScoreOn {
                    dataset: r("gate.score_on.dataset", &on.dataset)?,
                    label: r("gate.score_on.label", &on.label)?,
                    ..(**on).clone()
                })),
                None => None,
            },
        },
        StepKind::Promote(pr) => Resolved::Promote {
            model: r("promote.model", &pr.model)?,
            alias: r("promote.alias", &pr.alias)?,
            version: output_of("promote.version", &pr.version, "version", true)?,
        },
    })
}

/// Parses the `key=value` lines a command wrote to `LOOPML_STEP_OUTPUTS`.
fn parse_outputs(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "LOOPML_STEP_OUTPUTS line {}: `{line}` is not key=value",
                n + 1
            ));
        };
        let k = k.trim();
        if !template::is_output_key(k) {
            return Err(format!(
                "LOOPML_STEP_OUTPUTS line {}: `{k}` is not a valid output key (letters, \
                 digits, `_` and `-`)",
                n + 1
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

static OUTPUTS_SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs one attempt of a step.
async fn attempt_step(
    ctx: &Ctx,
    step: &Step,
    resolved: &Resolved,
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    match resolved {
        Resolved::Run {
            command, outputs, ..
        } => run_step_command(ctx, step, command, outputs, run, log).await,
        Resolved::Validate { data, suite } => builtin::validate(ctx, data, suite, run, log).await,
        Resolved::Register {
            model,
            run_id,
            artifact,
        } => builtin::register(ctx, model, run_id, artifact, run, log).await,
        Resolved::Gate {
            model,
            alias,
            challenger,
            metric,
            margin,
            direction,
            champion_without_metric,
            score_on,
        } => {
            let g = builtin::GateArgs {
                model,
                alias,
                challenger,
                metric,
                margin: *margin,
                direction: *direction,
                champion_without_metric: *champion_without_metric,
                score_on: score_on.as_deref(),
            };
            builtin::gate(ctx, &g, run, log).await
        }
        Resolved::Promote {
            model,
            alias,
            version,
        } => builtin::promote(ctx, model, alias, version, run, log).await,
    }
}

async fn run_step_command(
    ctx: &Ctx,
    step: &Step,
    command: &str,
    outputs: &[String],
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    let outputs_file = std::env::temp_dir().join(format!(
        "loopml-{}-{}-{}-{}.outputs",
        std::process::id(),
        ctx.p.name,
        step.name,
        OUTPUTS_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(e) = tokio::fs::write(&outputs_file, b"").await {
        return Attempt::Failed(format!(
            "cannot create the outputs file {}: {e}",
            outputs_file.display()
        ));
    }
    let mut env = ctx.env.clone();
    env.push(("LOOPML_PIPELINE".into(), ctx.p.name.clone()));
    env.push(("LOOPML_STEP".into(), step.name.clone()));
    for (k, v) in &ctx.params {
        env.push((
            format!("LOOPML_PARAM_{}", k.to_ascii_uppercase()),
            v.clone(),
        ));
    }
    env.push((
        "LOOPML_STEP_OUTPUTS".into(),
        outputs_file.display().to_string(),
    ));
    if let (Some(t), Some(r)) = (&ctx.tracker, run) {
        env.push(("MLFLOW_TRACKING_URI".into(), t.base().to_string()));
        env.push(("MLFLOW_RUN_ID".into(), r.run_id.clone()));
        if let Some(e) = &ctx.experiment_id {
            env.push(("MLFLOW_EXPERIMENT_ID".into(), e.clone()));
        }
    }
    let exit = run_command(command, &ctx.p.dir, &env, step.timeout, log).await;
    let published = tokio::fs::read_to_string(&outputs_file).await;
    let _ = tokio::fs::remove_file(&outputs_file).await;
    match exit {
        Exit::Code(0) => {}
        Exit::Code(c) => return Attempt::Failed(format!("the command exited with code {c}")),
        Exit::Signal => return Attempt::Failed("the command was killed by a signal".into()),
        Exit::TimedOut => {
            return Attempt::Failed(format!(
                "timed out after {} (the command's process group was killed)",
                human(step.timeout)
            ));
        }
        Exit::Spawn(e) => return Attempt::Failed(format!("cannot start `sh -c`: {e}")),
    }
    let missing: Vec<&str> = outputs
        .iter()
        .filter(|f| !ctx.path(f).exists())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Attempt::Failed(format!(
            "the command exited 0 but did not produce {}",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match parse_outputs(&published.unwrap_or_default()) {
        Ok(o) => Attempt::Ok(o),
        Err(m) => Attempt::Failed(m),
    }
}

/// A duration as the file would write it.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 && s % 3600.0 == 0.0 {
        format!("{}h", s / 3600.0)
    } else if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

/// Runs one step alone (e.g. in an Argo Workflow pod): no cache, no parent run; outputs of the
/// steps it refers to come from `upstream` (step → key → value).
pub async fn run_step(
    p: &Pipeline,
    name: &str,
    opts: &RunOptions,
    upstream: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<StepReport> {
    let index = p
        .steps
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| Error::UnknownStep(name.to_string()))?;
    let mut ctx = Ctx::new(p, opts).await?;
    ctx.no_cache = true;
    let job = Job {
        index,
        upstream: upstream.clone(),
        upstream_keys: Vec::new(),
        cached: None,
    };
    Ok(execute(Arc::new(ctx), job).await.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_file_lines() {
        let o = parse_outputs("a=1\n\n# note\nurl=http://x/?q=1\r\nb= spaced \n").unwrap();
        assert_eq!(o["a"], "1");
        assert_eq!(o["url"], "http://x/?q=1");
        assert_eq!(o["b"], " spaced ");
        assert!(parse_outputs("novalue\n").unwrap_err().contains("line 1"));
        assert!(parse_outputs("a.b=1\n").unwrap_err().contains("`a.b`"));
    }

    #[test]
    fn durations_read_back() {
        assert_eq!(human(std::time::Duration::from_secs(600)), "10m");
        assert_eq!(human(std::time::Duration::from_secs(7200)), "2h");
        assert_eq!(human(std::time::Duration::from_secs(1)), "1s");
        assert_eq!(human(std::time::Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn outcome_exit_codes() {
        let mut r = RunReport {
            pipeline: "p".into(),
            run_id: None,
            experiment_id: None,
            outcome: Outcome::Succeeded,
            seconds: 0.0,
            steps: Vec::new(),
        };
        assert_eq!(r.exit_code(), 0);
        r.outcome = Outcome::Failed;
        assert_eq!(r.exit_code(), 1);
        r.outcome = Outcome::Rejected;
        assert_eq!(r.exit_code(), 3);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["outcome"], "REJECTED");
    }
}
