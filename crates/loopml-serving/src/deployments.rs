//! Deployments: an endpoint name bound to one or more model versions (variants) with a traffic
//! policy — `single`, `canary` (with automatic rollback), `blue_green`, `shadow`, `ab` (sticky by
//! a request key) or `bandit` (Thompson sampling or epsilon-greedy over rewards sent as
//! feedback). A deployment is written as YAML or JSON:
//!
//! ```yaml
//! name: churn
//! variants:
//!   - {name: stable, model: "models:/churn@champion"}
//!   - {name: candidate, model: "models:/churn/4"}
//! policy:
//!   strategy: canary
//!   percent: 10
//!   rollback: {max_error_rate: 0.05, max_p99_latency_ms: 50, min_requests: 50}
//! ```
//!
//! Each variant is loaded as model `{deployment}.{variant}` (so `/v2/models/churn.candidate`
//! reaches it directly); a variant following a moving registry URI hot-swaps with the registry.
//! Choosing a variant is a read of the policy under a lock plus, for `bandit`, one Beta draw per
//! arm; the outcome updates per-variant counters and, for canaries, the rollback window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, RwLock};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::batcher::BatchConfig;
use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidInput(msg.into())
}

/// One model version behind a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// Variant name (`stable`, `candidate`, `blue`, `a`, …).
    pub name: String,
    /// `models:/name/3`, `models:/name@alias`, or (from the command line only) a file.
    pub model: String,
}

/// Canary thresholds that roll the candidate back on their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Highest tolerated share of failed candidate requests (0–1) in the window.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Highest tolerated p99 latency of the candidate in the window, in milliseconds.
    #[serde(default)]
    pub max_p99_latency_ms: Option<f64>,
    /// Candidate requests in the window before a verdict.
    #[serde(default = "default_min_requests")]
    pub min_requests: usize,
    /// Candidate requests the verdict looks at (the latest ones).
    #[serde(default = "default_window")]
    pub window: usize,
}

fn default_min_requests() -> usize {
    20
}
fn default_window() -> usize {
    200
}
fn hundred() -> f64 {
    100.0
}
fn default_key_header() -> String {
    "x-user-id".into()
}
fn default_epsilon() -> f64 {
    0.1
}

/// Bandit algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanditAlgorithm {
    /// Sample each arm's Beta posterior, route to the best draw.
    #[default]
    Thompson,
    /// The best mean reward with probability 1-ε, a random arm otherwise.
    EpsilonGreedy,
}

/// How traffic is split between variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
    /// One variant takes everything.
    #[default]
    Single,
    /// `percent` of requests go to the second variant (the candidate), the rest to the first.
    Canary {
        /// Candidate share, 0–100; adjustable live.
        percent: f64,
        /// Automatic rollback thresholds.
        #[serde(default)]
        rollback: Option<RollbackPolicy>,
    },
    /// The `active` variant takes everything; switching is one pointer change.
    BlueGreen {
        /// The live variant.
        active: String,
    },
    /// The first variant answers; the others get a mirrored copy of `percent` of requests.
    Shadow {
        /// Share of requests mirrored, 0–100.
        #[serde(default = "hundred")]
        percent: f64,
    },
    /// Sticky split by a hash of a request key (a header), weighted.
    Ab {
        /// Weight per variant (default: equal).
        #[serde(default)]
        weights: BTreeMap<String, f64>,
        /// Header holding the key (default `x-user-id`); requests without one are split at
        /// random.
        #[serde(default = "default_key_header")]
        key_header: String,
    },
    /// A multi-armed bandit over the variants, learning from rewards in \[0, 1\].
    Bandit {
        /// Thompson sampling or epsilon-greedy.
        #[serde(default)]
        algorithm: BanditAlgorithm,
        /// Exploration rate of epsilon-greedy.
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
}

impl Policy {
    /// The strategy's name.
    pub fn strategy(&self) -> &'static str {
        match self {
            Policy::Single => "single",
            Policy::Canary { .. } => "canary",
            Policy::BlueGreen { .. } => "blue_green",
            Policy::Shadow { .. } => "shadow",
            Policy::Ab { .. } => "ab",
            Policy::Bandit { .. } => "bandit",
        }
    }
}

/// Inference-log settings of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Whether requests are logged.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Share of requests logged (0–1).
    #[serde(default = "one")]
    pub sample: f64,
}

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sample: 1.0,
        }
    }
}

/// A deployment as users write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Endpoint name (`/v2/models/{name}/infer`, `/invocations?model={name}`).
    pub name: String,
    /// The model versions behind it.
    pub variants: Vec<VariantSpec>,
    /// Traffic policy.
    #[serde(default)]
    pub policy: Policy,
    /// Dynamic batching of every variant.
    #[serde(default)]
    pub batching: BatchConfig,
    /// Inference log.
    #[serde(default)]
    pub log: LogSettings,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid {what} name '{name}': use 1–64 letters, digits, '_' or '-'"
        )))
    }
}

fn check_percent(what: &str, p: f64) -> Result<()> {
    if (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(bad(format!("{what} must be between 0 and 100, got {p}")))
    }
}

impl DeploymentSpec {
    /// Parses YAML (JSON is YAML too).
    pub fn parse(text: &str) -> Result<Self> {
        let spec: Self =
            serde_saphyr::from_str(text).map_err(|e| bad(format!("invalid deployment: {e}")))?;
        spec.check()?;
        Ok(spec)
    }

    /// The variant names.
    pub fn variant_names(&self) -> Vec<&str> {
        self.variants.iter().map(|v| v.name.as_str()).collect()
    }

    /// Checks names, variant counts per strategy and every number's range.
    pub fn check(&self) -> Result<()> {
        check_name("deployment", &self.name)?;
        if self.variants.is_empty() {
            return Err(bad("a deployment needs at least one variant"));
        }
        for (i, v) in self.variants.iter().enumerate() {
            check_name("variant", &v.name)?;
            if v.model.trim().is_empty() {
                return Err(bad(format!("variant '{}' needs a model", v.name)));
            }
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(bad(format!("variant '{}' appears twice", v.name)));
            }
        }
        self.batching.check()?;
        if !(0.0..=1.0).contains(&self.log.sample) {
            return Err(bad(format!(
                "log.sample must be between 0 and 1, got {}",
                self.log.sample
            )));
        }
        let n = self.variants.len();
        let need = |min: usize, max: usize| -> Result<()> {
            if n < min || n > max {
                let what = if min == max {
                    format!("exactly {min}")
                } else if max == usize::MAX {
                    format!("at least {min}")
                } else {
                    format!("{min} to {max}")
                };
                return Err(bad(format!(
                    "strategy '{}' needs {what} variants, got {n}",
                    self.policy.strategy()
                )));
            }
            Ok(())
        };
        match &self.policy {
            Policy::Single => need(1, 1)?,
            Policy::Canary { percent, rollback } => {
                need(2, 2)?;
                check_percent("canary percent", *percent)?;
                if let Some(r) = rollback {
                    if r.max_error_rate.is_none() && r.max_p99_latency_ms.is_none() {
                        return Err(bad(
                            "rollback needs max_error_rate and/or max_p99_latency_ms",
                        ));
                    }
                    if r.max_error_rate.is_some_and(|e| !(0.0..=1.0).contains(&e)) {
                        return Err(bad("rollback.max_error_rate must be between 0 and 1"));
                    }
                    if r.max_p99_latency_ms.is_some_and(|l| l.is_nan() || l <= 0.0) {
                        return Err(bad("rollback.max_p99_latency_ms must be positive"));
                    }
                    if r.min_requests == 0 || r.window == 0 || r.min_requests > r.window {
                        return Err(bad("rollback needs 1 <= min_requests <= window"));
                    }
                    if r.window > 100_000 {
                        return Err(bad("rollback.window must be at most 100000"));
                    }
                }
            }
            Policy::BlueGreen { active } => {
                need(2, 2)?;
                if !self.variants.iter().any(|v| &v.name == active) {
                    return Err(bad(format!(
                        "blue_green active '{active}' is not one of the variants ({})",
                        self.variant_names().join(", ")
                    )));
                }
            }
            Policy::Shadow { percent } => {
                need(2, usize::MAX)?;
                check_percent("shadow percent", *percent)?;
            }
            Policy::Ab {
                weights,
                key_header,
            } => {
                need(2, usize::MAX)?;
                if axum::http::HeaderName::from_bytes(key_header.as_bytes()).is_err() {
                    return Err(bad(format!(
                        "ab key_header '{key_header}' is not a header name"
                    )));
                }
                if !weights.is_empty() {
                    for (k, w) in weights {
                        if !self.variants.iter().any(|v| &v.name == k) {
                            return Err(bad(format!("ab weight for unknown variant '{k}'")));
                        }
                        if !w.is_finite() || *w < 0.0 {
                            return Err(bad(format!("ab weight of '{k}' must be >= 0")));
                        }
                    }
                    if let Some(v) = self
                        .variants
                        .iter()
                        .find(|v| !weights.contains_key(&v.name))
                    {
                        return Err(bad(format!(
                            "ab weights: variant '{}' has no weight",
                            v.name
                        )));
                    }
                    if weights.values().sum::<f64>() <= 0.0 {
                        return Err(bad("ab weights must not all be 0"));
                    }
                }
            }
            Policy::Bandit { epsilon, .. } => {
                need(2, usize::MAX)?;
                if !(0.0..=1.0).contains(epsilon) {
                    return Err(bad("bandit epsilon must be between 0 and 1"));
                }
            }
        }
        Ok(())
    }

    /// The name under which a variant's model is loaded.
    pub fn model_name(&self, variant: &str) -> String {
        format!("{}.{variant}", self.name)
    }
}

/// A 64-bit FNV-1a hash (stable across runs and machines, for sticky assignment).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Maps a uniform `u` in \[0, 1) onto weighted choices.
fn weighted(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w / total;
        if u < acc {
            return i;
        }
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// Live numbers of one variant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VariantState {
    /// Requests answered (not counting shadow copies).
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Shadow copies run.
    #[serde(default)]
    pub shadow_requests: u64,
    /// Shadow copies that failed.
    #[serde(default)]
    pub shadow_errors: u64,
    /// Rewards received.
    pub rewards: u64,
    /// Their sum.
    pub reward_sum: f64,
    /// Latest outcomes (ok, latency µs), for canary verdicts and percentiles.
    #[serde(skip)]
    pub window: VecDeque<(bool, u32)>,
}

impl VariantState {
    /// Beta posterior parameters (prior Beta(1, 1)).
    pub fn beta(&self) -> (f64, f64) {
        (
            1.0 + self.reward_sum,
            1.0 + self.rewards as f64 - self.reward_sum,
        )
    }
    /// Mean reward (the posterior mean, 0.5 before any reward).
    pub fn mean_reward(&self) -> f64 {
        let (a, b) = self.beta();
        a / (a + b)
    }
    fn latency_quantile(&self, q: f64) -> Option<f64> {
        let mut l: Vec<u32> = self
            .window
            .iter()
            .filter(|(ok, _)| *ok)
            .map(|(_, us)| *us)
            .collect();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        let idx = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
        Some(f64::from(l[idx]) / 1000.0)
    }
}

/// Counters of one variant that replicas add up: this replica's since it last shared them, or
/// every replica's together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests answered (not counting shadow copies).
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Shadow copies run.
    pub shadow_requests: u64,
    /// Shadow copies that failed.
    pub shadow_errors: u64,
    /// Rewards received.
    pub rewards: u64,
    /// Their sum.
    pub reward_sum: f64,
}

impl Counts {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.shadow_requests += o.shadow_requests;
        self.shadow_errors += o.shadow_errors;
        self.rewards += o.rewards;
        self.reward_sum += o.reward_sum;
    }
}

impl VariantState {
    /// Its counters.
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests,
            errors: self.errors,
            shadow_requests: self.shadow_requests,
            shadow_errors: self.shadow_errors,
            rewards: self.rewards,
            reward_sum: self.reward_sum,
        }
    }
    fn set_counts(&mut self, c: &Counts) {
        self.requests = c.requests;
        self.errors = c.errors;
        self.shadow_requests = c.shadow_requests;
        self.shadow_errors = c.shadow_errors;
        self.rewards = c.rewards;
        self.reward_sum = c.reward_sum;
    }
}

/// What this replica counted since it last shared its counters: per variant, the counts and
/// the latest outcomes (ok, latency µs; at most a window's worth).
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Counts per variant.
    pub counts: BTreeMap<String, Counts>,
    /// Latest outcomes per variant, oldest first.
    pub outcomes: BTreeMap<String, VecDeque<(bool, u32)>>,
}

impl Pending {
    /// Whether there is nothing to share.
    pub fn is_empty(&self) -> bool {
        self.counts.values().all(Counts::is_empty) && self.outcomes.values().all(VecDeque::is_empty)
    }
    fn absorb(&mut self, other: Pending, window: usize) {
        for (v, c) in other.counts {
            self.counts.entry(v).or_default().add(&c);
        }
        for (v, mut o) in other.outcomes {
            let mine = self.outcomes.entry(v).or_default();
            o.append(mine);
            while o.len() > window {
                o.pop_front();
            }
            *mine = o;
        }
    }
}

/// Something that happened to a deployment (created, switched, rolled back…).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentEvent {
    /// Microseconds since the epoch.
    pub at_us: i64,
    /// What happened.
    pub message: String,
}

/// Mutable state of a deployment (persisted with it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeploymentState {
    /// `active`, or `rolled_back` after an automatic canary rollback.
    pub status: String,
    /// Why it was rolled back.
    #[serde(default)]
    pub rollback_reason: Option<String>,
    /// Per variant.
    #[serde(default)]
    pub variants: BTreeMap<String, VariantState>,
    /// The spec before the last promote/switch/rollback (for `rollback`).
    #[serde(default)]
    pub previous: Option<DeploymentSpec>,
    /// Latest events, newest last (at most 50).
    #[serde(default)]
    pub events: Vec<DeploymentEvent>,
    /// When the current spec took effect (µs since the epoch): outcomes from before it are not
    /// judged (a canary set to 10% again starts with a clean window).
    #[serde(default)]
    pub window_since_us: i64,
    /// What this replica counted since it last shared (never saved: the shared counters are).
    #[serde(skip)]
    pub pending: Pending,
}

impl DeploymentState {
    fn event(&mut self, message: String) {
        tracing::info!(%message, "deployment event");
        self.events.push(DeploymentEvent {
            at_us: crate::infer_log::now_us(),
            message,
        });
        if self.events.len() > 50 {
            let extra = self.events.len() - 50;
            self.events.drain(..extra);
        }
    }
}

/// What a request should do: the variant that answers and the ones that get a mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The answering variant.
    pub variant: String,
    /// Variants that get a shadow copy.
    pub mirrors: Vec<String>,
}

/// A live deployment.
#[derive(Debug)]
pub struct Deployment {
    spec: RwLock<std::sync::Arc<DeploymentSpec>>,
    state: Mutex<DeploymentState>,
    /// Whether the variants may be files (defined on the command line) and it is not persisted.
    pub from_file: bool,
}

/// What an outcome did to the deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing.
    None,
    /// The canary was rolled back (reason).
    RolledBack(String),
}

impl Deployment {
    /// A deployment from a checked spec and its saved state.
    pub fn new(spec: DeploymentSpec, state: Option<DeploymentState>, from_file: bool) -> Self {
        let mut state = state.unwrap_or_default();
        if state.status.is_empty() {
            state.status = "active".into();
        }
        if state.window_since_us == 0 {
            state.window_since_us = crate::infer_log::now_us();
        }
        Self {
            spec: RwLock::new(std::sync::Arc::new(spec)),
            state: Mutex::new(state),
            from_file,
        }
    }

    /// The current spec.
    pub fn spec(&self) -> std::sync::Arc<DeploymentSpec> {
        self.spec
            .read()
            .map(|s| std::sync::Arc::clone(&s))
            .unwrap_or_else(|e| std::sync::Arc::clone(&e.into_inner()))
    }

    /// The current state.
    pub fn state(&self) -> DeploymentState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut DeploymentState) -> T) -> T {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(e) => f(&mut e.into_inner()),
        }
    }

    /// Picks the variant for a request (`key`: the sticky key of an A/B split, `forced`: a
    /// variant the caller asked for by name).
    pub fn route(&self, key: Option<&str>, forced: Option<&str>) -> Result<Route> {
        let spec = self
            .spec
            .read()
            .map_err(|_| Error::Model("deployment lock poisoned".into()))?;
        if let Some(f) = forced {
            if !spec.variants.iter().any(|v| v.name == f) {
                return Err(Error::NotFound(format!(
                    "deployment '{}' has no variant '{f}' (it has {})",
                    spec.name,
                    spec.variant_names().join(", ")
                )));
            }
            return Ok(Route {
                variant: f.to_string(),
                mirrors: Vec::new(),
            });
        }
        let names = spec.variant_names();
        let mut rng = rand::rng();
        let one = |i: usize| Route {
            variant: names[i].to_string(),
            mirrors: Vec::new(),
        };
        Ok(match &spec.policy {
            Policy::Single => one(0),
            Policy::Canary { percent, .. } => {
                let to_candidate = *percent > 0.0 && rng.random::<f64>() * 100.0 < *percent;
                one(usize::from(to_candidate))
            }
            Policy::BlueGreen { active } => Route {
                variant: active.clone(),
                mirrors: Vec::new(),
            },
            Policy::Shadow { percent } => {
                let mirror = *percent > 0.0 && rng.random::<f64>() * 100.0 < *percent;
                Route {
                    variant: names[0].to_string(),
                    mirrors: if mirror {
                        names[1..].iter().map(|s| (*s).to_string()).collect()
                    } else {
                        Vec::new()
                    },
                }
            }
            Policy::Ab { weights, .. } => {
                let w: Vec<f64> = names
                    .iter()
                    .map(|n| {
                        if weights.is_empty() {
                            1.0
                        } else {
                            weights.get(*n).copied().unwrap_or(0.0)
                        }
                    })
                    .collect();
                let u = match key {
                    Some(k) => {
                        (fnv1a(&[spec.name.as_bytes(), k.as_bytes()]) >> 11) as f64
                            / (1u64 << 53) as f64
                    }
                    None => rng.random::<f64>(),
                };
                one(weighted(&w, u))
            }
            Policy::Bandit { algorithm, epsilon } => {
                let arms: Vec<(f64, f64)> = self.with_state(|st| {
                    names
                        .iter()
                        .map(|n| st.variants.get(*n).map_or((1.0, 1.0), VariantState::beta))
                        .collect()
                });
                let i = match algorithm {
                    BanditAlgorithm::Thompson => {
                        let mut best = (0, f64::MIN);
                        for (i, (a, b)) in arms.iter().enumerate() {
                            let draw = rand_distr::Beta::new(*a, *b)
                                .map(|d| rng.sample(d))
                                .unwrap_or(0.5);
                            if draw > best.1 {
                                best = (i, draw);
                            }
                        }
                        best.0
                    }
                    BanditAlgorithm::EpsilonGreedy => {
                        if rng.random::<f64>() < *epsilon {
                            rng.random_range(0..arms.len())
                        } else {
                            let means: Vec<f64> = arms.iter().map(|(a, b)| a / (a + b)).collect();
                            let top = means.iter().copied().fold(f64::MIN, f64::max);
                            let ties: Vec<usize> = (0..means.len())
                                .filter(|&i| (means[i] - top).abs() < 1e-12)
                                .collect();
                            ties[rng.random_range(0..ties.len())]
                        }
                    }
                };
                one(i)
            }
        })
    }

    /// The canary candidate and its rollback policy, when a verdict applies.
    fn judged(spec: &DeploymentSpec) -> (Option<String>, Option<RollbackPolicy>) {
        match &spec.policy {
            Policy::Canary { rollback, percent } if *percent > 0.0 => (
                spec.variants.get(1).map(|v| v.name.clone()),
                rollback.clone(),
            ),
            _ => (None, None),
        }
    }

    /// Records a request's outcome (or a shadow copy's); may roll a canary back.
    pub fn outcome(&self, variant: &str, shadow: bool, ok: bool, latency_us: u64) -> Verdict {
        let spec = self.spec();
        let (candidate, rollback) = Self::judged(&spec);
        let window_len = rollback.as_ref().map_or(200, |r| r.window);
        let latency = u32::try_from(latency_us).unwrap_or(u32::MAX);
        let verdict = self.with_state(|st| {
            let mut delta = Counts::default();
            if shadow {
                delta.shadow_requests = 1;
                delta.shadow_errors = u64::from(!ok);
            } else {
                delta.requests = 1;
                delta.errors = u64::from(!ok);
            }
            st.pending
                .counts
                .entry(variant.to_string())
                .or_default()
                .add(&delta);
            let pending = st.pending.outcomes.entry(variant.to_string()).or_default();
            pending.push_back((ok, latency));
            while pending.len() > window_len {
                pending.pop_front();
            }
            let v = st.variants.entry(variant.to_string()).or_default();
            let mut counts = v.counts();
            counts.add(&delta);
            v.set_counts(&counts);
            v.window.push_back((ok, latency));
            while v.window.len() > window_len {
                v.window.pop_front();
            }
            match (&candidate, &rollback) {
                (Some(c), Some(r)) if c == variant => Self::verdict(st, c, r),
                _ => Verdict::None,
            }
        });
        if let Verdict::RolledBack(reason) = &verdict {
            self.roll_back_canary(reason);
        }
        verdict
    }

    /// Judges the candidate `c` on its window.
    fn verdict(st: &DeploymentState, c: &str, r: &RollbackPolicy) -> Verdict {
        let Some(v) = st.variants.get(c) else {
            return Verdict::None;
        };
        if st.status != "active" || v.window.len() < r.min_requests {
            return Verdict::None;
        }
        let n = v.window.len() as f64;
        let errors = v.window.iter().filter(|(ok, _)| !ok).count() as f64;
        if let Some(max) = r.max_error_rate
            && errors / n > max
        {
            return Verdict::RolledBack(format!(
                "candidate '{c}' error rate {:.3} over its last {} requests is above {max}",
                errors / n,
                v.window.len()
            ));
        }
        if let Some(max) = r.max_p99_latency_ms
            && let Some(p99) = v.latency_quantile(0.99)
            && p99 > max
        {
            return Verdict::RolledBack(format!(
                "candidate '{c}' p99 latency {p99:.3} ms over its last {} requests is above \
                 {max} ms",
                v.window.len()
            ));
        }
        Verdict::None
    }

    /// When the current rollout's window began (µs), without copying the whole state.
    pub fn window_since_us(&self) -> i64 {
        self.with_state(|st| st.window_since_us)
    }

    /// Status and rollback reason, without copying the whole state.
    pub fn status(&self) -> (String, Option<String>) {
        self.with_state(|st| (st.status.clone(), st.rollback_reason.clone()))
    }

    /// How many latest outcomes a verdict (and the latency percentiles) look at.
    pub fn window_len(&self) -> usize {
        Self::judged(&self.spec()).1.map_or(200, |r| r.window)
    }

    /// Takes what this replica counted since it last shared (to write to the shared counters).
    pub fn take_pending(&self) -> Pending {
        self.with_state(|st| std::mem::take(&mut st.pending))
    }

    /// Puts back counts that could not be shared (the next share tries again), or moves the
    /// counts of a deployment this one replaces.
    pub fn restore_pending(&self, p: Pending) {
        let window = self.window_len();
        self.with_state(|st| st.pending.absorb(p, window));
    }

    /// Takes every replica's counters (`totals`, which include what this one shared) and the
    /// shared window of latest outcomes per variant; what this replica counted since is added
    /// on top. Then judges the canary on the shared window; may roll it back.
    pub fn apply_shared(
        &self,
        totals: &BTreeMap<String, Counts>,
        windows: BTreeMap<String, VecDeque<(bool, u32)>>,
    ) -> Verdict {
        let spec = self.spec();
        let (candidate, rollback) = Self::judged(&spec);
        let window_len = rollback.as_ref().map_or(200, |r| r.window);
        let verdict = self.with_state(|st| {
            for (name, total) in totals {
                let mut c = *total;
                if let Some(p) = st.pending.counts.get(name) {
                    c.add(p);
                }
                st.variants.entry(name.clone()).or_default().set_counts(&c);
            }
            for (name, mut w) in windows {
                if let Some(p) = st.pending.outcomes.get(&name) {
                    w.extend(p.iter().copied());
                }
                while w.len() > window_len {
                    w.pop_front();
                }
                st.variants.entry(name).or_default().window = w;
            }
            match (&candidate, &rollback) {
                (Some(c), Some(r)) => Self::verdict(st, c, r),
                _ => Verdict::None,
            }
        });
        if let Verdict::RolledBack(reason) = &verdict {
            self.roll_back_canary(reason);
        }
        verdict
    }

    /// Takes the operator-visible state another replica saved (status, rollback reason,
    /// previous spec, events, window start); counters and windows stay (they are shared apart).
    pub fn restore_control(&self, saved: DeploymentState) {
        self.with_state(|st| {
            if st.window_since_us != saved.window_since_us {
                for v in st.variants.values_mut() {
                    v.window.clear();
                }
            }
            st.status = saved.status;
            st.rollback_reason = saved.rollback_reason;
            st.previous = saved.previous;
            st.events = saved.events;
            st.window_since_us = saved.window_since_us;
        });
    }

    /// The state to save: everything but the counters and windows (shared on their own).
    pub fn control_state(&self) -> DeploymentState {
        let mut st = self.state();
        st.variants.clear();
        st.pending = Pending::default();
        st
    }

    fn roll_back_canary(&self, reason: &str) {
        if let Ok(mut spec) = self.spec.write()
            && let Policy::Canary { percent, .. } = &mut std::sync::Arc::make_mut(&mut spec).policy
        {
            *percent = 0.0;
        }
        self.with_state(|st| {
            st.status = "rolled_back".into();
            st.rollback_reason = Some(reason.to_string());
            st.event(format!(
                "automatic rollback: {reason}; canary traffic set to 0%"
            ));
        });
    }

    /// The variant that answers when nothing is split off: the active colour of a blue-green
    /// deployment, else the first variant.
    pub fn primary(&self) -> String {
        let spec = self.spec();
        match &spec.policy {
            Policy::BlueGreen { active } => active.clone(),
            _ => spec.variants[0].name.clone(),
        }
    }

    /// Adds an event.
    pub fn note(&self, message: String) {
        self.with_state(|st| st.event(message));
    }

    /// Puts back the state saved with the deployment (counters, rewards, events, status).
    pub fn restore_state(&self, state: DeploymentState) {
        self.with_state(|st| *st = state);
    }

    /// Adds a reward to a variant (bandit feedback; counted for every strategy).
    pub fn reward(&self, variant: &str, reward: f64) {
        self.with_state(|st| {
            let v = st.variants.entry(variant.to_string()).or_default();
            v.rewards += 1;
            v.reward_sum += reward;
            let p = st.pending.counts.entry(variant.to_string()).or_default();
            p.rewards += 1;
            p.reward_sum += reward;
        });
    }

    /// Replaces the spec by an operator action; the old one is kept for `rollback`.
    fn replace(&self, new: DeploymentSpec, message: String) -> Result<()> {
        new.check()?;
        let old = self.spec();
        if let Ok(mut s) = self.spec.write() {
            *s = std::sync::Arc::new(new);
        }
        self.with_state(|st| {
            st.previous = Some((*old).clone());
            st.status = "active".into();
            st.rollback_reason = None;
            st.window_since_us = crate::infer_log::now_us();
            for v in st.variants.values_mut() {
                v.window.clear();
            }
            for o in st.pending.outcomes.values_mut() {
                o.clear();
            }
            st.event(message);
        });
        Ok(())
    }

    /// Sets the canary share.
    pub fn set_percent(&self, p: f64) -> Result<()> {
        check_percent("percent", p)?;
        let mut spec = (*self.spec()).clone();
        match &mut spec.policy {
            Policy::Canary { percent, .. } | Policy::Shadow { percent } => *percent = p,
            other => {
                return Err(bad(format!(
                    "traffic percent applies to canary and shadow deployments, not {}",
                    other.strategy()
                )));
            }
        }
        self.replace(spec, format!("traffic set to {p}%"))
    }

    /// Blue-green: makes `to` (default: the other one) active.
    pub fn switch(&self, to: Option<&str>) -> Result<String> {
        let mut spec = (*self.spec()).clone();
        let names: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
        let Policy::BlueGreen { active } = &mut spec.policy else {
            return Err(bad(format!(
                "switch applies to blue_green deployments, not {}",
                spec.policy.strategy()
            )));
        };
        let target = match to {
            Some(t) if names.iter().any(|n| n == t) => t.to_string(),
            Some(t) => {
                return Err(bad(format!(
                    "no variant '{t}' (it has {})",
                    names.join(", ")
                )));
            }
            None => names
                .iter()
                .find(|n| *n != active)
                .cloned()
                .unwrap_or_else(|| active.clone()),
        };
        let from = std::mem::replace(active, target.clone());
        self.replace(spec, format!("switched from '{from}' to '{target}'"))?;
        Ok(target)
    }

    /// Makes one variant take all traffic: the canary's candidate, the shadow, the other
    /// blue-green colour, or the named variant of an A/B split or bandit.
    pub fn promote(&self, variant: Option<&str>) -> Result<String> {
        let spec = self.spec();
        let pick = match (&spec.policy, variant) {
            (_, Some(v)) => {
                if !spec.variants.iter().any(|x| x.name == v) {
                    return Err(bad(format!("no variant '{v}'")));
                }
                v.to_string()
            }
            (Policy::Canary { .. } | Policy::Shadow { .. }, None) => spec.variants[1].name.clone(),
            (Policy::BlueGreen { active }, None) => spec
                .variants
                .iter()
                .find(|v| &v.name != active)
                .map(|v| v.name.clone())
                .unwrap_or_else(|| active.clone()),
            (Policy::Single, None) => {
                return Err(bad("a single-variant deployment has nothing to promote"));
            }
            (Policy::Ab { .. } | Policy::Bandit { .. }, None) => {
                return Err(bad("name the variant to promote"));
            }
        };
        let mut new = (*spec).clone();
        if let Policy::BlueGreen { active } = &mut new.policy {
            *active = pick.clone();
        } else {
            new.variants.retain(|v| v.name == pick);
            new.policy = Policy::Single;
        }
        self.replace(new, format!("promoted '{pick}'"))?;
        Ok(pick)
    }

    /// Undoes the last change: a canary goes to 0%; otherwise the spec before the last
    /// promote/switch comes back.
    pub fn rollback(&self) -> Result<DeploymentSpec> {
        let spec = self.spec();
        if let Policy::Canary { percent, .. } = &spec.policy
            && *percent > 0.0
        {
            self.roll_back_canary("manual rollback");
            return Ok((*self.spec()).clone());
        }
        let previous = self.state().previous.ok_or_else(|| {
            bad(format!(
                "deployment '{}' has no earlier state to roll back to",
                spec.name
            ))
        })?;
        self.replace(previous.clone(), "rolled back to the previous spec".into())?;
        Ok(previous)
    }

    /// The status as JSON: spec, state, and per variant requests, errors, error rate, p50/p99
    /// latency over the window, rewards and the share of traffic it gets.
    pub fn status_json(&self, versions: &HashMap<String, String>) -> serde_json::Value {
        let spec = self.spec();
        let st = self.state();
        let variants: Vec<serde_json::Value> = spec
            .variants
            .iter()
            .map(|v| {
                let s = st.variants.get(&v.name).cloned().unwrap_or_default();
                serde_json::json!({
                    "name": v.name,
                    "model": v.model,
                    "model_name": spec.model_name(&v.name),
                    "model_version": versions.get(&v.name),
                    "requests": s.requests,
                    "errors": s.errors,
                    "error_rate": if s.requests > 0 { s.errors as f64 / s.requests as f64 } else { 0.0 },
                    "shadow_requests": s.shadow_requests,
                    "shadow_errors": s.shadow_errors,
                    "p50_latency_ms": s.latency_quantile(0.5),
                    "p99_latency_ms": s.latency_quantile(0.99),
                    "rewards": s.rewards,
                    "reward_sum": s.reward_sum,
                    "mean_reward": s.mean_reward(),
                })
            })
            .collect();
        serde_json::json!({
            "name": spec.name,
            "strategy": spec.policy.strategy(),
            "status": st.status,
            "rollback_reason": st.rollback_reason,
            "spec": spec.as_ref(),
            "variants": variants,
            "events": st.events,
            "source": if self.from_file { "file" } else { "api" },
        })
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DeploymentSpec {
        DeploymentSpec::parse(yaml).unwrap()
    }

    fn counts(
        d: &Deployment,
        n: usize,
        key: impl Fn(usize) -> Option<String>,
    ) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for i in 0..n {
            let k = key(i);
            *c.entry(d.route(k.as_deref(), None).unwrap().variant)
                .or_insert(0) += 1;
        }
        c
    }

    /// |observed - expected| within 5 standard deviations of a binomial count.
    fn near(observed: usize, n: usize, p: f64) -> bool {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        (observed as f64 - mean).abs() <= 5.0 * sd.max(1.0)
    }

    const TWO: &str =
        "variants: [{name: a, model: 'models:/m/1'}, {name: b, model: 'models:/m/2'}]\n";

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (yaml, needle) in [
            ("name: x\nvariants: []", "at least one variant"),
            (
                "name: 'a.b'\nvariants: [{name: a, model: m}]",
                "invalid deployment name",
            ),
            (
                &format!("name: x\n{TWO}policy: {{strategy: canary, percent: 120}}"),
                "between 0 and 100",
            ),
            (
                &format!("name: x\n{TWO}policy: {{strategy: blue_green, active: c}}"),
                "not one of the variants",
            ),
            (
                &format!("name: x\n{TWO}policy: {{strategy: single}}"),
                "exactly 1",
            ),
            (
                &format!("name: x\n{TWO}policy: {{strategy: ab, weights: {{a: 1}}}}"),
                "has no weight",
            ),
            (
                &format!("name: x\n{TWO}policy: {{strategy: bandit, epsilon: 2}}"),
                "epsilon",
            ),
            (
                &format!(
                    "name: x\n{TWO}policy: {{strategy: canary, percent: 5, rollback: {{min_requests: 5}}}}"
                ),
                "max_error_rate",
            ),
            (
                &format!("name: x\n{TWO}policy: {{strategy: teleport}}"),
                "teleport",
            ),
            (
                "name: x\nvariants: [{name: a, model: m}, {name: a, model: n}]\npolicy: {strategy: shadow}",
                "twice",
            ),
        ] {
            let err = DeploymentSpec::parse(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn canary_sends_its_percent_to_the_candidate() {
        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: canary, percent: 10}}"
            )),
            None,
            false,
        );
        let c = counts(&d, 20_000, |_| None);
        assert!(near(c["b"], 20_000, 0.1), "{c:?}");
        d.set_percent(50.0).unwrap();
        let c = counts(&d, 20_000, |_| None);
        assert!(near(c["b"], 20_000, 0.5), "{c:?}");
        d.set_percent(0.0).unwrap();
        assert_eq!(counts(&d, 1000, |_| None).get("b"), None);
    }

    #[test]
    fn canary_rolls_back_on_errors_and_on_latency() {
        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: canary, percent: 50, rollback: {{max_error_rate: 0.2, min_requests: 10, window: 20}}}}"
            )),
            None,
            false,
        );
        for _ in 0..9 {
            assert_eq!(d.outcome("b", false, false, 100), Verdict::None);
        }
        // Stable errors never roll back the candidate.
        for _ in 0..50 {
            assert_eq!(d.outcome("a", false, false, 100), Verdict::None);
        }
        assert!(matches!(
            d.outcome("b", false, false, 100),
            Verdict::RolledBack(_)
        ));
        assert_eq!(d.state().status, "rolled_back");
        assert_eq!(counts(&d, 1000, |_| None).get("b"), None);

        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: canary, percent: 50, rollback: {{max_p99_latency_ms: 5, min_requests: 10}}}}"
            )),
            None,
            false,
        );
        for _ in 0..9 {
            d.outcome("b", false, true, 1_000);
        }
        assert_eq!(d.outcome("b", false, true, 2_000), Verdict::None);
        assert!(
            matches!(d.outcome("b", false, true, 50_000), Verdict::RolledBack(r) if r.contains("p99"))
        );
    }

    #[test]
    fn blue_green_switches_and_rolls_back_at_once() {
        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: blue_green, active: a}}"
            )),
            None,
            false,
        );
        assert_eq!(counts(&d, 100, |_| None)["a"], 100);
        assert_eq!(d.switch(None).unwrap(), "b");
        assert_eq!(counts(&d, 100, |_| None)["b"], 100);
        d.rollback().unwrap();
        assert_eq!(counts(&d, 100, |_| None)["a"], 100);
    }

    #[test]
    fn ab_is_sticky_and_weighted() {
        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: ab, weights: {{a: 3, b: 1}}}}"
            )),
            None,
            false,
        );
        let c = counts(&d, 20_000, |i| Some(format!("user-{i}")));
        assert!(near(c["a"], 20_000, 0.75), "{c:?}");
        for i in 0..200 {
            let k = format!("user-{i}");
            let first = d.route(Some(&k), None).unwrap().variant;
            for _ in 0..5 {
                assert_eq!(d.route(Some(&k), None).unwrap().variant, first);
            }
        }
    }

    #[test]
    fn shadow_answers_with_the_primary_and_mirrors_a_share() {
        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: shadow, percent: 30}}"
            )),
            None,
            false,
        );
        let mut mirrored = 0;
        for _ in 0..10_000 {
            let r = d.route(None, None).unwrap();
            assert_eq!(r.variant, "a");
            mirrored += usize::from(r.mirrors == ["b"]);
        }
        assert!(near(mirrored, 10_000, 0.3), "{mirrored}");
    }

    #[test]
    fn bandits_learn_the_better_arm() {
        for algo in ["thompson", "epsilon_greedy"] {
            let d = Deployment::new(
                spec(&format!(
                    "name: x\n{TWO}policy: {{strategy: bandit, algorithm: {algo}, epsilon: 0.1}}"
                )),
                None,
                false,
            );
            let mut rng = rand::rng();
            let mut late_b = 0;
            for i in 0..3000 {
                let v = d.route(None, None).unwrap().variant;
                let p = if v == "b" { 0.7 } else { 0.3 };
                let r = if rng.random::<f64>() < p { 1.0 } else { 0.0 };
                d.reward(&v, r);
                if i >= 2000 {
                    late_b += usize::from(v == "b");
                }
            }
            assert!(
                late_b > 850,
                "{algo}: arm b got {late_b}/1000 late requests"
            );
        }
    }

    #[test]
    fn promote_and_rollback() {
        let d = Deployment::new(
            spec(&format!(
                "name: x\n{TWO}policy: {{strategy: canary, percent: 10}}"
            )),
            None,
            false,
        );
        assert_eq!(d.promote(None).unwrap(), "b");
        assert_eq!(d.spec().policy, Policy::Single);
        assert_eq!(counts(&d, 100, |_| None)["b"], 100);
        d.rollback().unwrap();
        assert!(matches!(d.spec().policy, Policy::Canary { .. }));
        assert!(d.set_percent(101.0).is_err());
        assert!(d.switch(None).is_err());
    }
}
