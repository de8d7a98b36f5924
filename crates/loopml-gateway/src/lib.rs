//! The LLM gateway: one OpenAI-compatible endpoint in front of every model provider, configured
//! with LiteLLM's proxy `config.yaml` unchanged. This first part reads and checks that config
//! (`config`); the endpoints, providers, routing, keys and budgets build on it.

pub mod config;
pub mod error;

pub use config::{Deployment, GatewayConfig, Provider, RoutingStrategy};
pub use error::{Error, Result};
