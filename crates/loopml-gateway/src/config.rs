//! LiteLLM's proxy `config.yaml`, read unchanged: `model_list` (each `model_name` with its
//! `litellm_params` and `model_info`), `router_settings`, `litellm_settings`,
//! `general_settings.master_key` and `environment_variables`. Values written
//! `os.environ/NAME` are read from the environment (or from `environment_variables`). Keys
//! loopml does not act on are collected by their dotted path (`unsupported`), so the caller can
//! report each one once at start-up instead of ignoring it silently; a key that is present but
//! wrong (a strategy that does not exist, a fallback to an unknown model, a negative rpm) is an
//! error naming the key.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The provider a deployment's `litellm_params.model` prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// `openai/…` (or no prefix): OpenAI's API.
    OpenAi,
    /// An OpenAI-compatible server: `hosted_vllm/`, `ollama_chat/`, `ollama/`, `lm_studio/`,
    /// `groq/`, `together_ai/`, `deepseek/`, `mistral/`, `fireworks_ai/`, `openrouter/`,
    /// `xai/`, `perplexity/`, `deepinfra/` (the prefix is kept).
    OpenAiCompatible(String),
    /// `azure/…`: Azure OpenAI (needs `api_base` and `api_version`).
    Azure,
    /// `anthropic/…`: Anthropic's Messages API.
    Anthropic,
    /// `gemini/…`: Google's Gemini API.
    Gemini,
    /// `bedrock/…`: AWS Bedrock's Converse API.
    Bedrock,
}

impl Provider {
    /// The provider of a `litellm_params.model` value, and the upstream model name.
    pub fn of(model: &str) -> Result<(Provider, String)> {
        let Some((prefix, name)) = model.split_once('/') else {
            return Ok((Provider::OpenAi, model.to_string()));
        };
        let p = match prefix {
            "openai" | "text-completion-openai" => Provider::OpenAi,
            "azure" | "azure_ai" => Provider::Azure,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "bedrock" | "bedrock_converse" => Provider::Bedrock,
            "hosted_vllm" | "vllm" | "ollama" | "ollama_chat" | "lm_studio" | "groq"
            | "together_ai" | "deepseek" | "mistral" | "fireworks_ai" | "openrouter" | "xai"
            | "perplexity" | "deepinfra" | "openai_compatible" => {
                Provider::OpenAiCompatible(prefix.to_string())
            }
            other => {
                return Err(Error::Config(format!(
                    "provider '{other}' (in model '{model}') is not supported; supported: openai, \
                     azure, anthropic, gemini, bedrock, and the OpenAI-compatible hosted_vllm, \
                     ollama, ollama_chat, lm_studio, groq, together_ai, deepseek, mistral, \
                     fireworks_ai, openrouter, xai, perplexity, deepinfra"
                )));
            }
        };
        Ok((p, name.to_string()))
    }

    /// Its name, as LiteLLM's prefix.
    pub fn name(&self) -> &str {
        match self {
            Provider::OpenAi => "openai",
            Provider::OpenAiCompatible(p) => p,
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Bedrock => "bedrock",
        }
    }
}

/// How a model group picks one of its deployments (`router_settings.routing_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingStrategy {
    /// Weighted random (by `weight`, else `rpm`, else `tpm`), LiteLLM's default.
    #[default]
    SimpleShuffle,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest recent latency.
    LatencyBased,
    /// Cheapest per token.
    CostBased,
    /// Most headroom under its rpm/tpm.
    UsageBased,
}

impl RoutingStrategy {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "simple-shuffle" => RoutingStrategy::SimpleShuffle,
            "least-busy" => RoutingStrategy::LeastBusy,
            "latency-based-routing" => RoutingStrategy::LatencyBased,
            "cost-based-routing" => RoutingStrategy::CostBased,
            "usage-based-routing" | "usage-based-routing-v2" => RoutingStrategy::UsageBased,
            other => {
                return Err(Error::Config(format!(
                    "router_settings.routing_strategy: '{other}' is not a strategy; use \
                     simple-shuffle, least-busy, latency-based-routing, cost-based-routing or \
                     usage-based-routing-v2"
                )));
            }
        })
    }
}

/// One deployment of a model group (one `model_list` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// The name clients ask for (`model_name`); several deployments may share it.
    pub model_name: String,
    /// Its id (`model_info.id`, else `<model_name>-<index>`).
    pub id: String,
    /// The provider.
    pub provider: Provider,
    /// The upstream model name (`litellm_params.model` without its prefix).
    pub model: String,
    /// `litellm_params.api_base`.
    pub api_base: Option<String>,
    /// `litellm_params.api_key`, resolved.
    pub api_key: Option<String>,
    /// `litellm_params.api_version` (Azure).
    pub api_version: Option<String>,
    /// Requests per minute this deployment may take.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Routing weight (simple-shuffle).
    pub weight: Option<f64>,
    /// Seconds before a request to it times out.
    pub timeout: Option<f64>,
    /// Seconds before a streamed request's first token times out.
    pub stream_timeout: Option<f64>,
    /// Retries of a failed call on this deployment.
    pub max_retries: Option<u32>,
    /// `model_info.mode`: chat, completion or embedding.
    pub mode: Option<String>,
    /// USD per input token (`model_info` or `litellm_params`).
    pub input_cost_per_token: Option<f64>,
    /// USD per output token.
    pub output_cost_per_token: Option<f64>,
    /// USD per cached input token.
    pub cache_read_input_token_cost: Option<f64>,
    /// AWS credentials and region (Bedrock).
    pub aws: AwsParams,
}

/// A Bedrock deployment's AWS settings: `litellm_params.aws_*`, else the usual `AWS_*`
/// environment variables.
#[derive(Clone, PartialEq, Default)]
pub struct AwsParams {
    /// `aws_access_key_id` / `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key` / `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token` / `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
    /// `aws_region_name` / `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// `aws_bedrock_runtime_endpoint` (else `https://bedrock-runtime.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for AwsParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsParams")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The whole config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayConfig {
    /// Deployments, in file order.
    pub deployments: Vec<Deployment>,
    /// How a model group picks a deployment.
    pub routing_strategy: RoutingStrategy,
    /// Retries across a group's deployments (`router_settings` or `litellm_settings`).
    pub num_retries: Option<u32>,
    /// Seconds per request (`router_settings.timeout` or `litellm_settings.request_timeout`).
    pub timeout: Option<f64>,
    /// Model group → the groups tried in order when it fails.
    pub fallbacks: Vec<(String, Vec<String>)>,
    /// Failures within a minute after which a deployment cools down.
    pub allowed_fails: Option<u32>,
    /// Seconds a deployment cools down.
    pub cooldown_time: Option<f64>,
    /// Most seconds one model group may spend on its deployments (retries and backoff
    /// included) before its fallbacks are tried (`router_settings.fallback_after`, loopml's
    /// own key; default 10 s). LiteLLM has no such cap: `num_retries` 3 × a 10 s timeout
    /// spends 30 s before the first fallback.
    pub fallback_after: Option<f64>,
    /// Drop request params a provider does not take instead of failing.
    pub drop_params: bool,
    /// The admin key (`general_settings.master_key`), resolved.
    pub master_key: Option<String>,
    /// `general_settings.allow_requests_on_db_unavailable`: a key not yet known here is let
    /// through (unlimited) while the key store cannot be asked, instead of a 503.
    pub allow_requests_on_db_unavailable: bool,
    /// `general_settings.disable_spend_logs`: spend is still counted, no request rows kept.
    pub disable_spend_logs: bool,
    /// `general_settings.store_prompts_in_spend_logs`: request and response bodies are logged.
    pub store_prompts_in_spend_logs: bool,
    /// `general_settings.maximum_spend_logs_retention_period` in ms (default 30 days).
    pub spend_logs_retention_ms: Option<i64>,
    /// Keys present in the file that loopml does not act on, by dotted path.
    pub unsupported: Vec<String>,
}

impl GatewayConfig {
    /// The model groups (distinct `model_name`s), in first-seen order.
    pub fn model_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for d in &self.deployments {
            if !out.contains(&d.model_name.as_str()) {
                out.push(&d.model_name);
            }
        }
        out
    }

    /// Reads a config from YAML text; `env` answers `os.environ/NAME` (the process environment
    /// in [`GatewayConfig::load`]), after the file's own `environment_variables`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let root: Value = serde_saphyr::from_str(text)
            .map_err(|e| Error::Config(format!("not a valid YAML config: {e}")))?;
        let root = match root {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(Error::Config("the config must be a mapping".into())),
        };
        let mut r = Reader {
            unsupported: Vec::new(),
            vars: BTreeMap::new(),
            env,
        };
        if let Some(vars) = root.get("environment_variables") {
            let vars = vars
                .as_object()
                .ok_or_else(|| Error::Config("environment_variables must be a mapping".into()))?;
            for (k, v) in vars {
                r.vars.insert(k.clone(), scalar_text(v).unwrap_or_default());
            }
        }
        for key in root.keys() {
            if !matches!(
                key.as_str(),
                "model_list"
                    | "router_settings"
                    | "litellm_settings"
                    | "general_settings"
                    | "environment_variables"
            ) {
                r.unsupported.push(key.clone());
            }
        }
        let mut cfg = GatewayConfig::default();
        let list = match root.get("model_list") {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => return Err(Error::Config("model_list must be a list".into())),
        };
        for (i, item) in list.iter().enumerate() {
            cfg.deployments.push(r.deployment(i, item)?);
        }
        let mut ids: Vec<&str> = Vec::new();
        for d in &cfg.deployments {
            if ids.contains(&d.id.as_str()) {
                return Err(Error::Config(format!(
                    "model_list: two deployments have the id '{}'",
                    d.id
                )));
            }
            ids.push(&d.id);
        }

        let litellm = r.section(&root, "litellm_settings")?;
        let router = r.section(&root, "router_settings")?;
        let general = r.section(&root, "general_settings")?;
        r.unknown(
            "litellm_settings",
            &litellm,
            &["drop_params", "num_retries", "request_timeout", "fallbacks"],
        );
        r.unknown(
            "router_settings",
            &router,
            &[
                "routing_strategy",
                "num_retries",
                "timeout",
                "fallbacks",
                "allowed_fails",
                "cooldown_time",
                "fallback_after",
            ],
        );
        r.unknown(
            "general_settings",
            &general,
            &[
                "master_key",
                "allow_requests_on_db_unavailable",
                "disable_spend_logs",
                "store_prompts_in_spend_logs",
                "maximum_spend_logs_retention_period",
            ],
        );

        if let Some(s) = router.get("routing_strategy") {
            let s = s.as_str().ok_or_else(|| {
                Error::Config("router_settings.routing_strategy must be a string".into())
            })?;
            cfg.routing_strategy = RoutingStrategy::parse(s)?;
        }
        cfg.drop_params = match litellm.get("drop_params") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::Config(
                    "litellm_settings.drop_params must be true or false".into(),
                ));
            }
        };
        // router_settings wins over litellm_settings, as LiteLLM's router reads them.
        cfg.num_retries = r
            .count("router_settings.num_retries", router.get("num_retries"))?
            .or(r.count("litellm_settings.num_retries", litellm.get("num_retries"))?)
            .map(|n| n as u32);
        cfg.timeout = r
            .seconds("router_settings.timeout", router.get("timeout"))?
            .or(r.seconds(
                "litellm_settings.request_timeout",
                litellm.get("request_timeout"),
            )?);
        cfg.allowed_fails = r
            .count("router_settings.allowed_fails", router.get("allowed_fails"))?
            .map(|n| n as u32);
        cfg.cooldown_time =
            r.seconds("router_settings.cooldown_time", router.get("cooldown_time"))?;
        cfg.fallback_after = r.seconds(
            "router_settings.fallback_after",
            router.get("fallback_after"),
        )?;
        let names = cfg
            .model_names()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        for (section, map) in [("router_settings", &router), ("litellm_settings", &litellm)] {
            if let Some(f) = map.get("fallbacks") {
                for (from, to) in fallbacks(&format!("{section}.fallbacks"), f)? {
                    for name in std::iter::once(&from).chain(&to) {
                        if !names.contains(name) {
                            return Err(Error::Config(format!(
                                "{section}.fallbacks: '{name}' is not a model_name of model_list \
                                 (they are {})",
                                names.join(", ")
                            )));
                        }
                    }
                    if !cfg.fallbacks.iter().any(|(f, _)| f == &from) {
                        cfg.fallbacks.push((from, to));
                    }
                }
            }
        }
        cfg.master_key = match general.get("master_key") {
            None | Some(Value::Null) => None,
            Some(v) => Some(r.text("general_settings.master_key", v)?),
        };
        let flag = |k: &str| -> Result<bool> {
            match general.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
                Some(_) => Err(Error::Config(format!(
                    "general_settings.{k} must be true or false"
                ))),
            }
        };
        cfg.allow_requests_on_db_unavailable = flag("allow_requests_on_db_unavailable")?;
        cfg.disable_spend_logs = flag("disable_spend_logs")?;
        cfg.store_prompts_in_spend_logs = flag("store_prompts_in_spend_logs")?;
        cfg.spend_logs_retention_ms = match general.get("maximum_spend_logs_retention_period") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let t = r.text("general_settings.maximum_spend_logs_retention_period", v)?;
                Some(crate::keys::parse_duration(&t).map_err(|e| {
                    Error::Config(format!(
                        "general_settings.maximum_spend_logs_retention_period: {e}"
                    ))
                })?)
            }
        };
        cfg.unsupported = r.unsupported;
        Ok(cfg)
    }

    /// Reads a config file, resolving `os.environ/NAME` from the process environment.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &|name| std::env::var(name).ok())
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

/// Walks the file, resolving values and noting keys it does not act on.
struct Reader<'a> {
    unsupported: Vec<String>,
    vars: BTreeMap<String, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Reader<'_> {
    fn section(&self, root: &Map<String, Value>, name: &str) -> Result<Map<String, Value>> {
        match root.get(name) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(Error::Config(format!("{name} must be a mapping"))),
        }
    }

    fn unknown(&mut self, at: &str, map: &Map<String, Value>, known: &[&str]) {
        for k in map.keys() {
            if !known.contains(&k.as_str()) {
                self.unsupported.push(format!("{at}.{k}"));
            }
        }
    }

    /// A text value; `os.environ/NAME` is looked up (a missing variable is an error naming it).
    fn text(&self, at: &str, v: &Value) -> Result<String> {
        let s = scalar_text(v).ok_or_else(|| Error::Config(format!("{at} must be text")))?;
        match s.strip_prefix("os.environ/") {
            Some(name) => self
                .vars
                .get(name)
                .cloned()
                .or_else(|| (self.env)(name))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{at}: environment variable {name} is not set (the config says \
                         os.environ/{name})"
                    ))
                }),
            None => Ok(s),
        }
    }

    fn opt_text(&self, at: &str, v: Option<&Value>) -> Result<Option<String>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.text(at, v).map(Some),
        }
    }

    fn number(&self, at: &str, v: Option<&Value>) -> Result<Option<f64>> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let x = match v {
            Value::Number(n) => n.as_f64(),
            other => self.text(at, other)?.trim().parse::<f64>().ok(),
        }
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| Error::Config(format!("{at} must be a number ≥ 0, got {v}")))?;
        Ok(Some(x))
    }

    fn count(&self, at: &str, v: Option<&Value>) -> Result<Option<u64>> {
        match self.number(at, v)? {
            Some(x) if x.fract() == 0.0 => Ok(Some(x as u64)),
            Some(x) => Err(Error::Config(format!(
                "{at} must be a whole number, got {x}"
            ))),
            None => Ok(None),
        }
    }

    fn seconds(&self, at: &str, v: Option<&Value>) -> Result<Option<f64>> {
        match self.number(at, v)? {
            Some(x) if x > 0.0 => Ok(Some(x)),
            Some(_) => Err(Error::Config(format!("{at} must be more than 0 seconds"))),
            None => Ok(None),
        }
    }

    fn deployment(&mut self, i: usize, item: &Value) -> Result<Deployment> {
        let at = format!("model_list[{i}]");
        let entry = item
            .as_object()
            .ok_or_else(|| Error::Config(format!("{at} must be a mapping")))?;
        let model_name = match entry.get("model_name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(Error::Config(format!("{at}.model_name is missing"))),
        };
        let at = format!("{at} ({model_name})");
        let empty = Map::new();
        let params = match entry.get("litellm_params") {
            Some(Value::Object(m)) => m,
            _ => return Err(Error::Config(format!("{at}: litellm_params is missing"))),
        };
        let info = match entry.get("model_info") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => &empty,
            Some(_) => return Err(Error::Config(format!("{at}.model_info must be a mapping"))),
        };
        for k in entry.keys() {
            // rpm/tpm beside litellm_params are LiteLLM's older spelling.
            if !matches!(
                k.as_str(),
                "model_name" | "litellm_params" | "model_info" | "rpm" | "tpm"
            ) {
                self.unsupported.push(format!("model_list[{i}].{k}"));
            }
        }
        const PARAMS: &[&str] = &[
            "model",
            "api_base",
            "api_key",
            "api_version",
            "rpm",
            "tpm",
            "weight",
            "timeout",
            "stream_timeout",
            "max_retries",
            "input_cost_per_token",
            "output_cost_per_token",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
            "aws_region_name",
            "aws_bedrock_runtime_endpoint",
        ];
        const INFO: &[&str] = &[
            "id",
            "mode",
            "input_cost_per_token",
            "output_cost_per_token",
            "cache_read_input_token_cost",
            "base_model",
            "max_tokens",
            "max_input_tokens",
            "max_output_tokens",
        ];
        let (params_at, info_at) = (
            format!("model_list[{i}].litellm_params"),
            format!("model_list[{i}].model_info"),
        );
        self.unknown(&params_at, params, PARAMS);
        self.unknown(&info_at, info, INFO);
        let model = self
            .opt_text(&format!("{at}.litellm_params.model"), params.get("model"))?
            .ok_or_else(|| Error::Config(format!("{at}: litellm_params.model is missing")))?;
        let (provider, upstream) =
            Provider::of(&model).map_err(|e| Error::Config(format!("{at}: {e}")))?;
        let p = |k: &str| format!("{at}.litellm_params.{k}");
        let d = Deployment {
            id: match info.get("id") {
                Some(v) => self.text(&format!("{at}.model_info.id"), v)?,
                None => format!("{model_name}-{i}"),
            },
            provider,
            model: upstream,
            api_base: self.opt_text(&p("api_base"), params.get("api_base"))?,
            api_key: self.opt_text(&p("api_key"), params.get("api_key"))?,
            api_version: self.opt_text(&p("api_version"), params.get("api_version"))?,
            rpm: self.count(&p("rpm"), params.get("rpm").or(entry.get("rpm")))?,
            tpm: self.count(&p("tpm"), params.get("tpm").or(entry.get("tpm")))?,
            weight: self.number(&p("weight"), params.get("weight"))?,
            timeout: self.seconds(&p("timeout"), params.get("timeout"))?,
            stream_timeout: self.seconds(&p("stream_timeout"), params.get("stream_timeout"))?,
            max_retries: self
                .count(&p("max_retries"), params.get("max_retries"))?
                .map(|n| n as u32),
            mode: self.opt_text(&format!("{at}.model_info.mode"), info.get("mode"))?,
            input_cost_per_token: self
                .number(
                    &format!("{at}.model_info.input_cost_per_token"),
                    info.get("input_cost_per_token"),
                )?
                .or(self.number(
                    &p("input_cost_per_token"),
                    params.get("input_cost_per_token"),
                )?),
            output_cost_per_token: self
                .number(
                    &format!("{at}.model_info.output_cost_per_token"),
                    info.get("output_cost_per_token"),
                )?
                .or(self.number(
                    &p("output_cost_per_token"),
                    params.get("output_cost_per_token"),
                )?),
            cache_read_input_token_cost: self.number(
                &format!("{at}.model_info.cache_read_input_token_cost"),
                info.get("cache_read_input_token_cost"),
            )?,
            aws: AwsParams::default(),
            model_name,
        };
        let aws = |r: &Self, k: &str, vars: &[&str]| -> Result<Option<String>> {
            match r.opt_text(&p(k), params.get(k))? {
                Some(v) => Ok(Some(v)),
                None => Ok(vars
                    .iter()
                    .find_map(|v| r.vars.get(*v).cloned().or_else(|| (r.env)(v)))),
            }
        };
        let d = if d.provider == Provider::Bedrock {
            let aws = AwsParams {
                access_key_id: aws(self, "aws_access_key_id", &["AWS_ACCESS_KEY_ID"])?,
                secret_access_key: aws(self, "aws_secret_access_key", &["AWS_SECRET_ACCESS_KEY"])?,
                session_token: aws(self, "aws_session_token", &["AWS_SESSION_TOKEN"])?,
                region: aws(
                    self,
                    "aws_region_name",
                    &["AWS_REGION", "AWS_DEFAULT_REGION"],
                )?,
                endpoint: aws(
                    self,
                    "aws_bedrock_runtime_endpoint",
                    &["AWS_BEDROCK_RUNTIME_ENDPOINT"],
                )?
                .or(d.api_base.clone()),
            };
            // A Bedrock API key (bearer) needs no signing; otherwise keys and a region do.
            let bearer = d.api_key.is_some() || (self.env)("AWS_BEARER_TOKEN_BEDROCK").is_some();
            if !bearer && (aws.access_key_id.is_none() || aws.secret_access_key.is_none()) {
                return Err(Error::Config(format!(
                    "{at}: a bedrock/ deployment needs AWS credentials: litellm_params                      aws_access_key_id and aws_secret_access_key (or AWS_ACCESS_KEY_ID and                      AWS_SECRET_ACCESS_KEY), or a Bedrock API key (api_key or                      AWS_BEARER_TOKEN_BEDROCK)"
                )));
            }
            if aws.region.is_none() && aws.endpoint.is_none() {
                return Err(Error::Config(format!(
                    "{at}: a bedrock/ deployment needs a region: litellm_params.aws_region_name                      or AWS_REGION"
                )));
            }
            let api_key = d
                .api_key
                .clone()
                .or_else(|| (self.env)("AWS_BEARER_TOKEN_BEDROCK"));
            Deployment { aws, api_key, ..d }
        } else {
            d
        };
        if let Some(m) = &d.mode
            && !matches!(m.as_str(), "chat" | "completion" | "embedding")
        {
            return Err(Error::Config(format!(
                "{at}.model_info.mode: '{m}' is not chat, completion or embedding"
            )));
        }
        if d.provider == Provider::Azure && (d.api_base.is_none() || d.api_version.is_none()) {
            return Err(Error::Config(format!(
                "{at}: an azure/ deployment needs litellm_params.api_base and api_version"
            )));
        }
        if matches!(d.provider, Provider::OpenAiCompatible(_)) && d.api_base.is_none() {
            let default_base = match d.provider.name() {
                "ollama" | "ollama_chat" => Some("http://localhost:11434"),
                "lm_studio" => Some("http://localhost:1234/v1"),
                "groq" => Some("https://api.groq.com/openai/v1"),
                "together_ai" => Some("https://api.together.xyz/v1"),
                "deepseek" => Some("https://api.deepseek.com/v1"),
                "mistral" => Some("https://api.mistral.ai/v1"),
                "fireworks_ai" => Some("https://api.fireworks.ai/inference/v1"),
                "openrouter" => Some("https://openrouter.ai/api/v1"),
                "xai" => Some("https://api.x.ai/v1"),
                "perplexity" => Some("https://api.perplexity.ai"),
                "deepinfra" => Some("https://api.deepinfra.com/v1/openai"),
                _ => None,
            };
            if default_base.is_none() {
                return Err(Error::Config(format!(
                    "{at}: a {}/ deployment needs litellm_params.api_base (the server's URL)",
                    d.provider.name()
                )));
            }
            return Ok(Deployment {
                api_base: default_base.map(str::to_string),
                ..d
            });
        }
        Ok(d)
    }
}

/// `fallbacks: [{"a": ["b", "c"]}, …]` as (group, fallbacks) pairs.
fn fallbacks(at: &str, v: &Value) -> Result<Vec<(String, Vec<String>)>> {
    let bad = || {
        Error::Config(format!(
            "{at} must be a list of {{model_name: [model_name, …]}}"
        ))
    };
    let items = match v {
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for item in items {
        let m = item.as_object().ok_or_else(bad)?;
        for (from, to) in m {
            let to = match to {
                Value::Array(t) => t
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
                    .collect::<Result<Vec<_>>>()?,
                Value::String(s) => vec![s.clone()],
                _ => return Err(bad()),
            };
            out.push((from.clone(), to));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("sk-openai".into()),
            "MASTER" => Some("sk-master".into()),
            _ => None,
        }
    }

    const FULL: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 600
      weight: 2
    model_info: {id: oai-east, input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001}
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eastus
      api_base: https://example.openai.azure.com
      api_key: os.environ/AZURE_KEY
      api_version: "2024-06-01"
      timeout: 30
  - model_name: local
    litellm_params: {model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct, api_base: "http://127.0.0.1:8000/v1"}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant, organization: acme}
    rpm: 50
router_settings:
  routing_strategy: least-busy
  num_retries: 2
  allowed_fails: 3
  cooldown_time: 60
  fallbacks: [{"gpt-4o": ["claude", "local"]}]
  redis_host: localhost
litellm_settings:
  drop_params: true
  request_timeout: 600
  success_callback: ["langfuse"]
general_settings:
  master_key: os.environ/MASTER
  database_url: postgresql://x
environment_variables:
  AZURE_KEY: az-from-file
"#;

    #[test]
    fn reads_litellms_config_unchanged() {
        let c = GatewayConfig::parse(FULL, &env).unwrap();
        assert_eq!(c.model_names(), ["gpt-4o", "local", "claude"]);
        let d = &c.deployments;
        assert_eq!(d.len(), 4);
        assert_eq!(
            (d[0].provider.clone(), d[0].model.as_str()),
            (Provider::OpenAi, "gpt-4o")
        );
        assert_eq!(d[0].id, "oai-east");
        assert_eq!(d[0].api_key.as_deref(), Some("sk-openai"));
        assert_eq!((d[0].rpm, d[0].weight), (Some(600), Some(2.0)));
        assert_eq!(d[0].output_cost_per_token, Some(0.00001));
        assert_eq!(d[1].provider, Provider::Azure);
        assert_eq!(
            d[1].api_key.as_deref(),
            Some("az-from-file"),
            "environment_variables"
        );
        assert_eq!(d[1].id, "gpt-4o-1");
        assert_eq!(d[1].timeout, Some(30.0));
        assert_eq!(
            d[2].provider,
            Provider::OpenAiCompatible("hosted_vllm".into())
        );
        assert_eq!(d[2].model, "meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(d[3].rpm, Some(50), "rpm beside litellm_params");
        assert_eq!(c.routing_strategy, RoutingStrategy::LeastBusy);
        assert_eq!((c.num_retries, c.allowed_fails), (Some(2), Some(3)));
        assert_eq!((c.cooldown_time, c.timeout), (Some(60.0), Some(600.0)));
        assert_eq!(
            c.fallbacks,
            vec![("gpt-4o".to_string(), vec!["claude".into(), "local".into()])]
        );
        assert!(c.drop_params);
        assert_eq!(c.master_key.as_deref(), Some("sk-master"));
        assert_eq!(
            c.unsupported,
            [
                "model_list[3].litellm_params.organization",
                "litellm_settings.success_callback",
                "router_settings.redis_host",
                "general_settings.database_url",
            ]
        );
    }

    #[test]
    fn wrong_values_name_their_key() {
        let cases = [
            (
                "model_list: [{model_name: a, litellm_params: {model: openai/x, api_key: os.environ/NOPE}}]",
                "model_list[0] (a).litellm_params.api_key: environment variable NOPE is not set",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: foo/x}}]",
                "provider 'foo'",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {api_base: http://x}}]",
                "litellm_params.model is missing",
            ),
            (
                "model_list: [{litellm_params: {model: x}}]",
                "model_list[0].model_name is missing",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: x, rpm: -1}}]",
                "rpm must be a number ≥ 0",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: x, rpm: 1.5}}]",
                "rpm must be a whole number",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: azure/x}}]",
                "needs litellm_params.api_base and api_version",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: hosted_vllm/x}}]",
                "needs litellm_params.api_base",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: x}}]\nrouter_settings: {routing_strategy: fastest}",
                "'fastest' is not a strategy",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: x}}]\nrouter_settings: {fallbacks: [{a: [b]}]}",
                "'b' is not a model_name",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: x}, model_info: {id: d}}, {model_name: b, litellm_params: {model: y}, model_info: {id: d}}]",
                "two deployments have the id 'd'",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: x}, model_info: {mode: image}}]",
                "not chat, completion or embedding",
            ),
            ("model_list: 3", "model_list must be a list"),
            ("- a\n- b", "the config must be a mapping"),
        ];
        for (text, want) in cases {
            let e = GatewayConfig::parse(text, &env).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\n  → {e}\n  wanted: {want}");
        }
    }

    #[test]
    fn providers_and_default_bases() {
        let c = GatewayConfig::parse(
            "model_list:\n  - {model_name: o, litellm_params: {model: ollama_chat/llama3}}\n  - {model_name: g, litellm_params: {model: gpt-4o-mini}}\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            c.deployments[0].api_base.as_deref(),
            Some("http://localhost:11434")
        );
        assert_eq!(
            c.deployments[1].provider,
            Provider::OpenAi,
            "no prefix is OpenAI"
        );
        assert!(c.unsupported.is_empty());
        assert_eq!(GatewayConfig::parse("", &env).unwrap().deployments.len(), 0);
    }
}
