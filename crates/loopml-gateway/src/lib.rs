//! The LLM gateway: one OpenAI-compatible endpoint in front of every model provider, configured
//! with LiteLLM's proxy `config.yaml` unchanged. `config` reads and checks that file; `proxy`
//! serves the OpenAI endpoints over its deployments and admits each call against the caller's
//! virtual key, team and user (`keys`, `ledger`); `prices` turns usage into cost; `spend` logs
//! every call off the request path; `metrics` exposes it all to Prometheus.

pub mod anthropic;
pub mod config;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod prices;
pub mod prompts;
pub mod providers;
pub mod proxy;
pub mod spend;

pub use config::{Deployment, GatewayConfig, Provider, RoutingStrategy};
pub use error::{Error, Result};
pub use proxy::{Gateway, Storage, metrics_router, router};
