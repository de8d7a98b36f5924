//! OpenAI, Azure OpenAI and every OpenAI-compatible server (vLLM, Ollama, LM Studio, Groq,
//! Together…): the request goes as it is, to the provider's URL with its auth header.

use serde_json::Value;

use super::{Adapter, Outbound, Unsupported};
use crate::config::{Deployment, Provider};

/// The OpenAI-shaped providers.
#[derive(Debug)]
pub struct OpenAi;

impl Adapter for OpenAi {
    fn prepare(
        &self,
        d: &Deployment,
        path: &str,
        body: &Value,
        _stream: bool,
    ) -> Result<Outbound, Unsupported> {
        let (url, headers) = if d.provider == Provider::Azure {
            let base = d.api_base.clone().unwrap_or_default();
            (
                format!(
                    "{}/openai/deployments/{}/{path}?api-version={}",
                    base.trim_end_matches('/'),
                    d.model,
                    d.api_version.clone().unwrap_or_default()
                ),
                d.api_key.clone().map(|k| ("api-key", k)),
            )
        } else {
            let base = d
                .api_base
                .clone()
                .unwrap_or_else(|| "https://api.openai.com/v1".to_string());
            let base = base.trim_end_matches('/');
            // Ollama's server answers the OpenAI API under /v1.
            let base = if matches!(d.provider.name(), "ollama" | "ollama_chat")
                && !base.ends_with("/v1")
            {
                format!("{base}/v1")
            } else {
                base.to_string()
            };
            (
                format!("{base}/{path}"),
                d.api_key
                    .clone()
                    .map(|k| ("authorization", format!("Bearer {k}"))),
            )
        };
        Ok(Outbound {
            url,
            headers: headers.into_iter().collect(),
            body: body.to_string().into_bytes(),
        })
    }
}
