//! The pipeline file: parsing the YAML, then checking names, kinds, `needs` (no unknown steps,
//! no cycles), references (`${params.…}`, `${steps.…}`, the steps a built-in step names) and
//! timeouts, so that a pipeline that loads can be scheduled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::{self, Piece};
use crate::{Error, Result};

/// A step's timeout when the file gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// A loaded, checked pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The pipeline's name (`[A-Za-z0-9._-]+`).
    pub name: String,
    /// The MLflow experiment its runs go to (may hold `${params.…}`).
    pub experiment: String,
    /// Declared params and their defaults (`None`: no default, a value must be given).
    pub params: BTreeMap<String, Option<String>>,
    /// Extra environment for every command step (values may hold `${params.…}`).
    pub env: BTreeMap<String, String>,
    /// The steps, in file order.
    pub steps: Vec<Step>,
    /// The pipeline file.
    pub file: PathBuf,
    /// The folder commands run in and relative paths are resolved against.
    pub dir: PathBuf,
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The step's name (`[A-Za-z0-9._-]+`), unique in the pipeline.
    pub name: String,
    /// Steps that must succeed before this one starts.
    pub needs: Vec<String>,
    /// What the step does.
    pub kind: StepKind,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How many times a failed attempt is retried.
    pub retries: u32,
    /// Whether the step cache may skip it (only `run` steps are ever cached).
    pub cache: bool,
}

/// What a step does; exactly one per step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// A shell command, run with `sh -c` in the pipeline's folder.
    Run(RunSpec),
    /// Validate a data file against an expectation suite.
    Validate(ValidateSpec),
    /// Register a new model version from an upstream step's run.
    Register(RegisterSpec),
    /// Compare a challenger version with the current champion on a metric.
    Gate(GateSpec),
    /// Move an alias to a version.
    Promote(PromoteSpec),
}

/// The kind of a step, as a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `run`
    Run,
    /// `validate`
    Validate,
    /// `register`
    Register,
    /// `gate`
    Gate,
    /// `promote`
    Promote,
}

impl Kind {
    /// The kind's name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Validate => "validate",
            Kind::Register => "register",
            Kind::Gate => "gate",
            Kind::Promote => "promote",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepKind {
    /// The kind's name.
    pub fn kind(&self) -> Kind {
        match self {
            StepKind::Run(_) => Kind::Run,
            StepKind::Validate(_) => Kind::Validate,
            StepKind::Register(_) => Kind::Register,
            StepKind::Gate(_) => Kind::Gate,
            StepKind::Promote(_) => Kind::Promote,
        }
    }
}

/// A command step.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// The command line (`sh -c`).
    pub command: String,
    /// Files or folders (relative to the pipeline folder) whose content keys the cache.
    pub inputs: Vec<String>,
    /// Files or folders the command must produce.
    pub outputs: Vec<String>,
}

/// A `validate` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    /// The CSV or Parquet file to check.
    pub data: String,
    /// The expectation suite (YAML file).
    pub suite: String,
}

/// A `register` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    /// The registered model (created when missing).
    pub model: String,
    /// The upstream step whose run logged the model.
    pub from: String,
    /// The model's artifact path in that run.
    #[serde(default = "default_artifact")]
    pub artifact: String,
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Higher is better.
    #[default]
    Max,
    /// Lower is better.
    Min,
}

/// What a gate does when the champion has no value for its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChampionWithoutMetric {
    /// Reject the challenger: there is nothing to compare it with (the default).
    #[default]
    Reject,
    /// Pass the challenger, as if there were no champion.
    Pass,
}

/// Where a fair gate scores champion and challenger: one dataset version, the same rows for
/// both, through the server's ONNX runtime (`POST /api/2.0/loopml/models/compare`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreOn {
    /// Dataset version, `NAME@N` or `NAME` (latest); may use `${…}` references.
    pub dataset: String,
    /// Its truth column.
    pub label: String,
    /// Columns given to the models (default: all but `label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Output column of the predicted label/value (default: `out_label`, `out_output_label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// Output column of the positive class's score, for roc_auc (default:
    /// `out_probabilities_<positive>`, `out_output_probability_<positive>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    /// The positive class (default `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<String>,
    /// Fewer labelled rows than this: the challenger is rejected (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<usize>,
    /// Also require the paired-bootstrap bound of the improvement at this confidence (e.g.
    /// 0.95) to clear `margin`, so a gate on few rows does not promote on noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Bootstrap resamples (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resamples: Option<usize>,
}

/// A `gate` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// The registered model.
    pub model: String,
    /// The alias naming the champion.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// A `register` step's name, or a literal version number.
    pub challenger: String,
    /// The metric compared (latest value in each version's source run).
    pub metric: String,
    /// How much better the challenger must be.
    #[serde(default)]
    pub margin: f64,
    /// Which way the metric improves.
    #[serde(default)]
    pub direction: Direction,
    /// When the champion has no value for `metric`: `reject` (default) or `pass`.
    #[serde(default)]
    pub champion_without_metric: ChampionWithoutMetric,
    /// Score both versions on one dataset version instead of comparing the latest value each
    /// version's own run logged (which may come from different data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_on: Option<Box<ScoreOn>>,
}

/// A `promote` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteSpec {
    /// The registered model.
    pub model: String,
    /// The alias to move.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// A `register` step's name, or a literal version number.
    pub version: String,
}

fn default_artifact() -> String {
    "model".into()
}

fn default_alias() -> String {
    "champion".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    #[serde(default)]
    experiment: Option<String>,
    #[serde(default)]
    params: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    steps: Vec<RawStep>,
}

/// Only where each step starts, to say which step a parse error is in.
#[derive(Deserialize)]
struct StepLines {
    steps: Vec<serde_saphyr::Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default)]
    needs: Option<OneOrMany>,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    validate: Option<ValidateSpec>,
    #[serde(default)]
    register: Option<RegisterSpec>,
    #[serde(default)]
    gate: Option<GateSpec>,
    #[serde(default)]
    promote: Option<PromoteSpec>,
    #[serde(default)]
    inputs: Option<Vec<String>>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    cache: Option<bool>,
}

/// Parses a timeout: a number of seconds, or a number with an `s`, `m` or `h` suffix.
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    let bad = || format!("`{s}` is not a duration: use seconds or a number with s, m or h (10m)");
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("`{s}`: a timeout must be more than zero"));
    }
    Duration::try_from_secs_f64(n * unit).map_err(|_| bad())
}

fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl Pipeline {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Self::from_yaml(&text, &file)
    }

    /// Parses and checks a pipeline from YAML text; `file` names it in errors and its folder is
    /// the pipeline folder.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self> {
        let label = file.display().to_string();
        let raw: RawPipeline = serde_saphyr::from_str(text).map_err(|e| Error::Parse {
            file: label.clone(),
            message: match step_at(text, &e) {
                Some(step) => format!("{step}: {e}"),
                None => e.to_string(),
            },
        })?;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Checker { file: label }.build(raw, file.to_path_buf(), dir)
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn index(&self) -> HashMap<&str, usize> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect()
    }

    /// Indices of each step's `needs`.
    pub(crate) fn need_indices(&self) -> Vec<Vec<usize>> {
        let index = self.index();
        self.steps
            .iter()
            .map(|s| {
                s.needs
                    .iter()
                    .filter_map(|n| index.get(n.as_str()).copied())
                    .collect()
            })
            .collect()
    }

    /// Step indices in a topological order (a step after its needs; file order among peers).
    pub(crate) fn topo_order(&self) -> Vec<usize> {
        topo(&self.need_indices())
    }

    /// Every step `name` depends on, directly or transitively.
    pub fn ancestors(&self, name: &str) -> BTreeSet<String> {
        let needs = self.need_indices();
        let Some(start) = self.steps.iter().position(|s| s.name == name) else {
            return BTreeSet::new();
        };
        let mut seen = BTreeSet::new();
        let mut todo = needs[start].clone();
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                todo.extend(needs[i].iter().copied());
            }
        }
        seen.into_iter()
            .map(|i| self.steps[i].name.clone())
            .collect()
    }

    /// Steps grouped into stages that can run in parallel: a step's stage is one more than the
    /// latest stage among its needs.
    pub fn stages(&self) -> Vec<Vec<String>> {
        let needs = self.need_indices();
        let mut depth = vec![0usize; self.steps.len()];
        for i in self.topo_order() {
            depth[i] = needs[i].iter().map(|&n| depth[n] + 1).max().unwrap_or(0);
        }
        let mut stages: Vec<Vec<String>> = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            if stages.len() <= depth[i] {
                stages.resize(depth[i] + 1, Vec::new());
            }
            stages[depth[i]].push(s.name.clone());
        }
        stages
    }

    /// The params' values: the defaults overridden by `overrides`; an override of an undeclared
    /// param, or a param with neither, is an error.
    pub fn resolve_params(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        for name in overrides.keys() {
            if !self.params.contains_key(name) {
                let declared = if self.params.is_empty() {
                    "no params".to_string()
                } else {
                    self.params.keys().cloned().collect::<Vec<_>>().join(", ")
                };
                return Err(Error::UnknownParam {
                    name: name.clone(),
                    declared,
                });
            }
        }
        self.params
            .iter()
            .map(|(k, default)| {
                overrides
                    .get(k)
                    .or(default.as_ref())
                    .map(|v| (k.clone(), v.clone()))
                    .ok_or_else(|| Error::MissingParam { name: k.clone() })
            })
            .collect()
    }

    /// Where the step cache of this pipeline is kept.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(".loopml").join(format!("{}.lock", self.name))
    }
}

/// The step a parse error is in (`step `name``), found by reading the file again leniently
/// for where each step starts.
fn step_at(text: &str, e: &serde_saphyr::Error) -> Option<String> {
    let line = e.location()?.line();
    let lines: StepLines = serde_saphyr::from_str(text).ok()?;
    let (i, step) = lines
        .steps
        .iter()
        .enumerate()
        .rfind(|(_, s)| s.referenced.line() <= line)?;
    Some(match step.value.get("name").and_then(Value::as_str) {
        Some(n) => format!("step `{n}`"),
        None => format!("step #{}", i + 1),
    })
}

/// Kahn's algorithm, lowest index first among ready steps; steps on a cycle are left out.
fn topo(needs: &[Vec<usize>]) -> Vec<usize> {
    let n = needs.len();
    let mut missing: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, ns) in needs.iter().enumerate() {
        for &d in ns {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

/// The first cycle found by a depth-first walk along `needs`, as indices with the first one
/// repeated at the end.
fn find_cycle(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = needs.len();
    let mut color = vec![0u8; n]; // 0 unseen, 1 on the current path, 2 done
    for start in 0..n {
        if color[start] != 0 {
            continue;
        }
        color[start] = 1;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(top) = stack.last_mut() {
            let (u, next) = *top;
            if next < needs[u].len() {
                top.1 += 1;
                let v = needs[u][next];
                match color[v] {
                    0 => {
                        color[v] = 1;
                        stack.push((v, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|&(w, _)| w == v).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|&(w, _)| w).collect();
                        cycle.push(v);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                color[u] = 2;
                stack.pop();
            }
        }
    }
    None
}

struct Checker {
    file: String,
}

impl Checker {
    fn invalid(&self, message: String) -> Error {
        Error::Invalid {
            file: self.file.clone(),
            message,
        }
    }

    fn build(&self, raw: RawPipeline, file: PathBuf, dir: PathBuf) -> Result<Pipeline> {
        if !template::is_name(&raw.name) {
            return Err(self.invalid(format!(
                "field `name`: `{}` is not a valid name (letters, digits, `.`, `_` and `-`)",
                raw.name
            )));
        }
        let mut params = BTreeMap::new();
        let mut upper = BTreeMap::new();
        for (k, v) in raw.params.unwrap_or_default() {
            if !template::is_param_name(&k) {
                return Err(self.invalid(format!(
                    "params: `{k}` is not a valid param name (letters, digits and `_`)"
                )));
            }
            if let Some(other) = upper.insert(k.to_ascii_uppercase(), k.clone()) {
                return Err(self.invalid(format!(
                    "params: `{other}` and `{k}` differ only in case (both would be \
                     LOOPML_PARAM_{})",
                    k.to_ascii_uppercase()
                )));
            }
            params.insert(k, v);
        }
        let mut env = BTreeMap::new();
        for (k, v) in raw.env.unwrap_or_default() {
            if !is_env_name(&k) {
                return Err(self.invalid(format!(
                    "env: `{k}` is not a valid environment variable name"
                )));
            }
            self.check_refs(&format!("env `{k}`"), &v, &params, None)?;
            env.insert(k, v);
        }
        let experiment = raw.experiment.unwrap_or_else(|| raw.name.clone());
        if experiment.trim().is_empty() {
            return Err(self.invalid("field `experiment` is empty".into()));
        }
        self.check_refs("field `experiment`", &experiment, &params, None)?;
        if raw.steps.is_empty() {
            return Err(self.invalid("field `steps`: a pipeline needs at least one step".into()));
        }
        let mut steps = Vec::with_capacity(raw.steps.len());
        for (i, raw) in raw.steps.into_iter().enumerate() {
            steps.push(self.step(i, raw)?);
        }
        let mut index = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            if index.insert(s.name.clone(), i).is_some() {
                return Err(self.invalid(format!(
                    "step `{}`: the name is used by more than one step",
                    s.name
                )));
            }
        }
        for s in &steps {
            let mut seen = BTreeSet::new();
            for n in &s.needs {
                if !index.contains_key(n) {
                    return Err(self.invalid(format!(
                        "step `{}`, field `needs`: no step is named `{n}`",
                        s.name
                    )));
                }
                if !seen.insert(n) {
                    return Err(self.invalid(format!(
                        "step `{}`, field `needs`: `{n}` is listed twice",
                        s.name
                    )));
                }
            }
        }
        let p = Pipeline {
            name: raw.name,
            experiment,
            params,
            env,
            steps,
            file,
            dir,
        };
        if let Some(cycle) = find_cycle(&p.need_indices()) {
            return Err(Error::Cycle {
                file: self.file.clone(),
                cycle: cycle.into_iter().map(|i| p.steps[i].name.clone()).collect(),
            });
        }
        for s in &p.steps {
            let up = p.ancestors(&s.name);
            self.check_step_refs(s, &p, &up)?;
        }
        Ok(p)
    }

    fn step(&self, i: usize, raw: RawStep) -> Result<Step> {
        let label = if raw.name.is_empty() {
            format!("step #{}", i + 1)
        } else {
            format!("step `{}`", raw.name)
        };
        let name = raw.name;
        if !template::is_name(&name) {
            return Err(self.invalid(format!(
                "{label}, field `name`: not a valid name (letters, digits, `.`, `_` and `-`)"
            )));
        }
        let mut kinds = Vec::new();
        if raw.run.is_some() {
            kinds.push("run");
        }
        if raw.validate.is_some() {
            kinds.push("validate");
        }
        if raw.register.is_some() {
            kinds.push("register");
        }
        if raw.gate.is_some() {
            kinds.push("gate");
        }
        if raw.promote.is_some() {
            kinds.push("promote");
        }
        if kinds.len() != 1 {
            let what = if kinds.is_empty() {
                "has none".to_string()
            } else {
                format!("has {}", kinds.join(", "))
            };
            return Err(self.invalid(format!(
                "{label}: a step has exactly one of `run`, `validate`, `register`, `gate`, \
                 `promote`; this one {what}"
            )));
        }
        let kind = if let Some(command) = raw.run {
            if command.trim().is_empty() {
                return Err(self.invalid(format!("{label}, field `run`: the command is empty")));
            }
            StepKind::Run(RunSpec {
                command,
                inputs: raw.inputs.unwrap_or_default(),
                outputs: raw.outputs.unwrap_or_default(),
            })
        } else {
            for (field, given) in [
                ("inputs", raw.inputs.is_some()),
                ("outputs", raw.outputs.is_some()),
            ] {
                if given {
                    return Err(self.invalid(format!(
                        "{label}, field `{field}`: only `run` steps have {field}"
                    )));
                }
            }
            if raw.cache == Some(true) {
                return Err(self.invalid(format!(
                    "{label}, field `cache`: built-in steps ({}) are never cached",
                    kinds.join("")
                )));
            }
            if let Some(v) = raw.validate {
                StepKind::Validate(v)
            } else if let Some(r) = raw.register {
                StepKind::Register(r)
            } else if let Some(g) = raw.gate {
                if !g.margin.is_finite() {
                    return Err(self.invalid(format!("{label}, field `gate.margin`: not a number")));
                }
                StepKind::Gate(g)
            } else if let Some(p) = raw.promote {
                StepKind::Promote(p)
            } else {
                return Err(self.invalid(format!("{label}: no kind")));
            }
        };
        let timeout = match raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => parse_timeout(&text)
                .map_err(|m| self.invalid(format!("{label}, field `timeout`: {m}")))?,
        };
        let needs = match raw.needs {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
        };
        let cache = matches!(kind, StepKind::Run(_)) && raw.cache.unwrap_or(true);
        Ok(Step {
            name,
            needs,
            kind,
            timeout,
            retries: raw.retries.unwrap_or(0),
            cache,
        })
    }

    /// Checks the references in one field: params must be declared; step outputs must come
    /// from upstream steps (`up`; `None` where step outputs are not allowed).
    fn check_refs(
        &self,
        at: &str,
        value: &str,
        params: &BTreeMap<String, Option<String>>,
        up: Option<&BTreeSet<String>>,
    ) -> Result<()> {
        let pieces = template::parse(value).map_err(|m| self.invalid(format!("{at}: {m}")))?;
        for piece in pieces {
            match piece {
                Piece::Text(_) => {}
                Piece::Param(name) => {
                    if !params.contains_key(&name) {
                        let declared = if params.is_empty() {
                            "the pipeline declares no params".to_string()
                        } else {
                            format!(
                                "declared: {}",
                                params.keys().cloned().collect::<Vec<_>>().join(", ")
                            )
                        };
                        return Err(
                            self.invalid(format!("{at}: unknown param `{name}` ({declared})"))
                        );
                    }
                }
                Piece::Output { step, key } => match up {
                    None => {
                        return Err(self.invalid(format!(
                            "{at}: `${{steps.{step}.{key}}}` cannot be used here (only in a \
                             step's fields)"
                        )));
                    }
                    Some(up) if !up.contains(&step) => {
                        return Err(self.invalid(format!(
                            "{at}: `${{steps.{step}.{key}}}` refers to `{step}`, which is not \
                             upstream of this step (add it to `needs`)"
                        )));
                    }
                    Some(_) => {}
                },
            }
        }
        Ok(())
    }

    /// Checks a field that names an upstream step (or, where `literal_version`, a version
    /// number). Templated values are checked when the step runs.
    fn check_step_name(
        &self,
        at: &str,
        value: &str,
        p: &Pipeline,
        up: &BTreeSet<String>,
        literal_version: bool,
    ) -> Result<()> {
        if value.contains("${") || up.contains(value) {
            return Ok(());
        }
        if p.step(value).is_some() {
            return Err(self.invalid(format!(
                "{at}: step `{value}` is not upstream of this step (add it to `needs`)"
            )));
        }
        if literal_version && value.parse::<u64>().is_ok_and(|n| n > 0) {
            return Ok(());
        }
        let what = if literal_version {
            "names no step and is not a version number"
        } else {
            "names no step"
        };
        Err(self.invalid(format!("{at}: `{value}` {what}")))
    }

    fn check_step_refs(&self, s: &Step, p: &Pipeline, up: &BTreeSet<String>) -> Result<()> {
        let at = |field: &str| format!("step `{}`, field `{field}`", s.name);
        let params = &p.params;
        let refs = |field: &str, v: &str| self.check_refs(&at(field), v, params, Some(up));
        match &s.kind {
            StepKind::Run(r) => {
                refs("run", &r.command)?;
                for (i, f) in r.inputs.iter().enumerate() {
                    refs(&format!("inputs[{i}]"), f)?;
                }
                for (i, f) in r.outputs.iter().enumerate() {
                    refs(&format!("outputs[{i}]"), f)?;
                }
            }
            StepKind::Validate(v) => {
                refs("validate.data", &v.data)?;
                refs("validate.suite", &v.suite)?;
            }
            StepKind::Register(r) => {
                refs("register.model", &r.model)?;
                refs("register.from", &r.from)?;
                refs("register.artifact", &r.artifact)?;
                self.check_step_name(&at("register.from"), &r.from, p, up, false)?;
            }
            StepKind::Gate(g) => {
                refs("gate.model", &g.model)?;
                refs("gate.alias", &g.alias)?;
                refs("gate.challenger", &g.challenger)?;
                refs("gate.metric", &g.metric)?;
                if let Some(on) = &g.score_on {
                    refs("gate.score_on.dataset", &on.dataset)?;
                    refs("gate.score_on.label", &on.label)?;
                    if let Some(c) = on.confidence
                        && !(0.5..1.0).contains(&c)
                    {
                        return Err(self.invalid(format!(
                            "{}: `confidence` must be at least 0.5 and below 1, got {c}",
                            at("gate.score_on")
                        )));
                    }
                }
                self.check_step_name(&at("gate.challenger"), &g.challenger, p, up, true)?;
            }
            StepKind::Promote(pr) => {
                refs("promote.model", &pr.model)?;
                refs("promote.alias", &pr.alias)?;
                refs("promote.version", &pr.version)?;
                self.check_step_name(&at("promote.version"), &pr.version, p, up, true)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Pipeline> {
        Pipeline::from_yaml(yaml, Path::new("/p/pipeline.yaml"))
    }

    fn err(yaml: &str) -> String {
        load(yaml).unwrap_err().to_string()
    }

    const FULL: &str = r#"
name: churn-retrain
experiment: churn
params:
  rows: 5000
  data: data/fresh.csv
env: {SEED: "7"}
steps:
  - name: generate
    run: python generate.py --rows ${params.rows} --out ${params.data}
    inputs: [generate.py]
    outputs: ["${params.data}"]
    timeout: 10m
    retries: 1
    cache: true
  - name: check
    needs: [generate]
    validate: {data: "${params.data}", suite: suite.yaml}
  - name: train
    needs: [check]
    run: python train.py --data ${params.data}
    inputs: [train.py, "${params.data}"]
  - name: register
    needs: [train]
    register: {model: churn, from: train, artifact: model}
  - name: gate
    needs: [register]
    gate: {model: churn, alias: champion, challenger: register, metric: roc_auc, margin: 0.01, direction: max}
  - name: promote
    needs: [gate]
    promote: {model: churn, alias: champion, version: register}
"#;

    #[test]
    fn parses_the_documented_example() {
        let p = load(FULL).unwrap();
        assert_eq!(p.name, "churn-retrain");
        assert_eq!(p.experiment, "churn");
        assert_eq!(p.dir, Path::new("/p"));
        assert_eq!(p.params["rows"].as_deref(), Some("5000"));
        assert_eq!(p.env["SEED"], "7");
        assert_eq!(p.steps.len(), 6);
        let g = &p.steps[0];
        assert_eq!(g.timeout, Duration::from_secs(600));
        assert_eq!(g.retries, 1);
        assert!(g.cache);
        match &g.kind {
            StepKind::Run(r) => {
                assert_eq!(r.inputs, vec!["generate.py"]);
                assert_eq!(r.outputs, vec!["${params.data}"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.steps[1].timeout, DEFAULT_TIMEOUT);
        assert!(!p.steps[1].cache, "built-in steps are never cached");
        match &p.steps[4].kind {
            StepKind::Gate(g) => {
                assert_eq!(g.margin, 0.01);
                assert_eq!(g.direction, Direction::Max);
                assert_eq!(g.challenger, "register");
            }
            other => panic!("{other:?}"),
        }
        match &p.steps[3].kind {
            StepKind::Register(r) => assert_eq!(r.artifact, "model"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.ancestors("promote").into_iter().collect::<Vec<_>>(),
            vec!["check", "gate", "generate", "register", "train"]
        );
        assert_eq!(p.lock_path(), Path::new("/p/.loopml/churn-retrain.lock"));
    }

    #[test]
    fn defaults_experiment_alias_artifact_and_direction() {
        let p = load(
            "name: p\nsteps:\n  - {name: t, run: 'true'}\n  - name: r\n    needs: t\n    register: {model: m, from: t}\n  - {name: g, needs: [r], gate: {model: m, challenger: 3, metric: rmse, direction: min}}\n  - {name: pr, needs: [g], promote: {model: m, version: 3}}\n",
        )
        .unwrap();
        assert_eq!(p.experiment, "p");
        assert_eq!(p.steps[1].needs, vec!["t"]);
        match &p.steps[1].kind {
            StepKind::Register(r) => assert_eq!(r.artifact, "model"),
            other => panic!("{other:?}"),
        }
        match &p.steps[2].kind {
            StepKind::Gate(g) => {
                assert_eq!(g.alias, "champion");
                assert_eq!(g.challenger, "3");
                assert_eq!(g.direction, Direction::Min);
                assert_eq!(g.margin, 0.0);
            }
            other => panic!("{other:?}"),
        }
        match &p.steps[3].kind {
            StepKind::Promote(pr) => {
                assert_eq!((pr.alias.as_str(), pr.version.as_str()), ("champion", "3"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_rejected_naming_the_step() {
        let e = err("name: p\nsteps:\n  - {name: a, run: x, comand: y}\n");
        assert!(e.contains("step `a`") && e.contains("comand"), "{e}");
        let e = err(
            "name: p\nsteps:\n  - name: a\n    run: x\n  - name: b\n    run: y\n    retries: -1\n",
        );
        assert!(e.contains("step `b`") && e.contains("line 7"), "{e}");
        let e = err("name: p\nstepz: []\nsteps: []\n");
        assert!(e.contains("stepz"), "{e}");
        let e = err(
            "name: p\nsteps:\n  - {name: g, gate: {model: m, challenger: 1, metric: x, margn: 1}}\n",
        );
        assert!(e.contains("step `g`") && e.contains("margn"), "{e}");
    }

    #[test]
    fn scalars_keep_their_text() {
        let p = load(
            "name: p\nparams: {v: 1.10, flag: y}\nenv: {N: 007}\nsteps:\n  - {name: a, run: y}\n",
        )
        .unwrap();
        assert_eq!(p.params["v"].as_deref(), Some("1.10"));
        assert_eq!(p.params["flag"].as_deref(), Some("y"));
        assert_eq!(p.env["N"], "007");
        assert!(matches!(&p.steps[0].kind, StepKind::Run(r) if r.command == "y"));
    }

    #[test]
    fn duplicate_and_unknown_steps() {
        let e = err("name: p\nsteps:\n  - {name: a, run: x}\n  - {name: a, run: y}\n");
        assert!(e.contains("step `a`") && e.contains("more than one"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: a, run: x, needs: [b]}\n");
        assert!(
            e.contains("step `a`, field `needs`: no step is named `b`"),
            "{e}"
        );
    }

    #[test]
    fn cycles_name_the_steps_on_the_cycle() {
        let e = err(
            "name: p\nsteps:\n  - {name: a, run: x, needs: [b]}\n  - {name: b, run: x, needs: [a]}\n",
        );
        assert!(e.contains("a → b → a"), "{e}");
        let e = err(
            "name: p\nsteps:\n  - {name: s, run: x}\n  - {name: a, run: x, needs: [s, c]}\n  - {name: b, run: x, needs: [a]}\n  - {name: c, run: x, needs: [b]}\n",
        );
        assert!(e.contains("a → c → b → a"), "{e}");
        assert!(!e.contains("s →"), "steps off the cycle are not named: {e}");
        let e = err("name: p\nsteps:\n  - {name: a, run: x, needs: [a]}\n");
        assert!(e.contains("a → a"), "{e}");
        match load(
            "name: p\nsteps:\n  - {name: a, run: x, needs: [b]}\n  - {name: b, run: x, needs: [a]}\n",
        ) {
            Err(Error::Cycle { cycle, .. }) => assert_eq!(cycle, vec!["a", "b", "a"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_or_several_kinds() {
        let e = err("name: p\nsteps:\n  - {name: a}\n");
        assert!(e.contains("step `a`") && e.contains("has none"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: a, run: x, validate: {data: d, suite: s}}\n");
        assert!(
            e.contains("step `a`") && e.contains("has run, validate"),
            "{e}"
        );
    }

    #[test]
    fn bad_timeouts_and_timeout_forms() {
        let e = err("name: p\nsteps:\n  - {name: a, run: x, timeout: 10 minutes}\n");
        assert!(e.contains("step `a`, field `timeout`"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: a, run: x, timeout: 0}\n");
        assert!(e.contains("more than zero"), "{e}");
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_timeout("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_timeout("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_timeout("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout(" 0.5 ").unwrap(), Duration::from_millis(500));
        for bad in ["", "m", "-1", "1d", "1e400", "NaN", "infs", "10 m x"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        let p = load("name: p\nsteps:\n  - {name: a, run: x, timeout: 2.5}\n").unwrap();
        assert_eq!(p.steps[0].timeout, Duration::from_millis(2500));
    }

    #[test]
    fn references_must_be_declared_params_and_upstream_steps() {
        let e =
            err("name: p\nparams: {rows: 1}\nsteps:\n  - {name: a, run: 'echo ${params.rws}'}\n");
        assert!(
            e.contains("step `a`, field `run`: unknown param `rws` (declared: rows)"),
            "{e}"
        );
        let e = err("name: p\nsteps:\n  - {name: a, run: x, inputs: [ok, '${params.f}']}\n");
        assert!(
            e.contains("field `inputs[1]`") && e.contains("no params"),
            "{e}"
        );
        let e = err(
            "name: p\nsteps:\n  - {name: a, run: x}\n  - {name: b, run: 'echo ${steps.a.x}'}\n",
        );
        assert!(
            e.contains("step `b`, field `run`") && e.contains("not upstream"),
            "{e}"
        );
        // Transitive needs are enough.
        load("name: p\nsteps:\n  - {name: a, run: x}\n  - {name: b, run: x, needs: [a]}\n  - {name: c, run: 'echo ${steps.a.x}', needs: [b]}\n").unwrap();
        let e = err("name: p\nenv: {A: '${steps.a.x}'}\nsteps:\n  - {name: a, run: x}\n");
        assert!(
            e.contains("env `A`") && e.contains("cannot be used here"),
            "{e}"
        );
        let e = err("name: p\nsteps:\n  - {name: a, validate: {data: '${params.d}', suite: s}}\n");
        assert!(e.contains("field `validate.data`"), "{e}");
        // Shell variables are not ours.
        load("name: p\nsteps:\n  - {name: a, run: 'echo ${HOME} $PATH'}\n").unwrap();
    }

    #[test]
    fn built_in_steps_must_name_upstream_steps() {
        let e = err(
            "name: p\nsteps:\n  - {name: t, run: x}\n  - {name: r, register: {model: m, from: t}}\n",
        );
        assert!(
            e.contains("step `r`, field `register.from`: step `t` is not upstream"),
            "{e}"
        );
        let e = err("name: p\nsteps:\n  - {name: r, register: {model: m, from: nope}}\n");
        assert!(e.contains("`nope` names no step"), "{e}");
        let e = err(
            "name: p\nsteps:\n  - {name: t, run: x}\n  - {name: r, needs: [t], register: {model: m, from: t}}\n  - {name: g, needs: [t], gate: {model: m, challenger: r, metric: x}}\n",
        );
        assert!(
            e.contains("step `g`, field `gate.challenger`: step `r` is not upstream"),
            "{e}"
        );
        let e = err("name: p\nsteps:\n  - {name: pr, promote: {model: m, version: latest}}\n");
        assert!(
            e.contains("step `pr`, field `promote.version`: `latest` names no step and is not a version number"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_and_misplaced_fields() {
        let e = err("name: 'my pipeline'\nsteps:\n  - {name: a, run: x}\n");
        assert!(e.contains("field `name`"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: 'a/b', run: x}\n");
        assert!(e.contains("step `a/b`, field `name`"), "{e}");
        let e = err("name: p\nparams: {'a-b': 1}\nsteps:\n  - {name: a, run: x}\n");
        assert!(e.contains("`a-b` is not a valid param name"), "{e}");
        let e = err("name: p\nparams: {rows: 1, ROWS: 2}\nsteps:\n  - {name: a, run: x}\n");
        assert!(e.contains("differ only in case"), "{e}");
        let e = err("name: p\nenv: {'1X': a}\nsteps:\n  - {name: a, run: x}\n");
        assert!(e.contains("`1X`"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: a, validate: {data: d, suite: s}, inputs: [x]}\n");
        assert!(e.contains("step `a`, field `inputs`"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: a, validate: {data: d, suite: s}, cache: true}\n");
        assert!(e.contains("never cached"), "{e}");
        let e = err("name: p\nsteps: []\n");
        assert!(e.contains("at least one step"), "{e}");
        let e = err("name: p\nsteps:\n  - {name: a, run: '  '}\n");
        assert!(e.contains("empty"), "{e}");
        let e = err("name: [\n");
        assert!(e.contains("not a valid pipeline"), "{e}");
    }

    #[test]
    fn params_resolve_with_overrides() {
        let p =
            load("name: p\nparams: {a: 1, b: x, c: }\nsteps:\n  - {name: s, run: x}\n").unwrap();
        assert_eq!(p.params["c"], None);
        let mut o = BTreeMap::new();
        assert!(matches!(
            p.resolve_params(&o),
            Err(Error::MissingParam { name }) if name == "c"
        ));
        o.insert("c".to_string(), "3".to_string());
        o.insert("a".to_string(), "9".to_string());
        let r = p.resolve_params(&o).unwrap();
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            vec![
                ("a".to_string(), "9".to_string()),
                ("b".into(), "x".into()),
                ("c".into(), "3".into())
            ]
        );
        o.insert("z".to_string(), "1".to_string());
        let e = p.resolve_params(&o).unwrap_err().to_string();
        assert!(
            e.contains("unknown param `z`") && e.contains("a, b, c"),
            "{e}"
        );
    }

    #[test]
    fn stages_group_parallel_steps_in_topological_order() {
        let p = load(
            "name: p\nsteps:\n  - {name: d, run: x, needs: [b, c]}\n  - {name: b, run: x, needs: [a]}\n  - {name: c, run: x, needs: [a]}\n  - {name: a, run: x}\n  - {name: e, run: x}\n  - {name: f, run: x, needs: [a, d]}\n",
        )
        .unwrap();
        assert_eq!(
            p.stages(),
            vec![
                vec!["a".to_string(), "e".into()],
                vec!["b".into(), "c".into()],
                vec!["d".into()],
                vec!["f".into()]
            ]
        );
        let order: Vec<&str> = p
            .topo_order()
            .into_iter()
            .map(|i| p.steps[i].name.as_str())
            .collect();
        assert_eq!(order, vec!["a", "b", "c", "d", "e", "f"]);
    }
}
