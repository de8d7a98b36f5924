//! The LLM gateway: one OpenAI-compatible endpoint in front of every model provider, configured
//! with LiteLLM's proxy `config.yaml` unchanged. `config` reads and checks that file; `proxy`
//! serves the OpenAI endpoints over its deployments (OpenAI, OpenAI-compatible and Azure
//! upstreams so far). Keys, budgets, limits and the other providers build on these.

pub mod anthropic;
pub mod config;
pub mod error;
pub mod proxy;

pub use config::{Deployment, GatewayConfig, Provider, RoutingStrategy};
pub use error::{Error, Result};
pub use proxy::{Gateway, router};
