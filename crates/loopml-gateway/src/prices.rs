//! The bundled price table and cost of a call. Prices are USD per token for the common hosted
//! models (input, output, cached input read, cache write), as their providers publish them;
//! a deployment's `model_info` (`input_cost_per_token`, `output_cost_per_token`,
//! `cache_read_input_token_cost`) overrides them. A model is found by its upstream name with
//! the provider's prefixes taken off (`openai/`, Bedrock's `us.anthropic.`) and the longest
//! table name it starts with at a `-`, `:` or `@` boundary, so dated snapshots
//! (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`) price as their family. A model the table
//! does not know (self-hosted vLLM, Ollama) costs 0 unless its deployment names a price.

use crate::config::Deployment;

/// A model's prices, USD per token.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    /// Per input token not read from a cache.
    pub input: f64,
    /// Per output token (reasoning tokens included).
    pub output: f64,
    /// Per input token read from the provider's prompt cache.
    pub cache_read: f64,
    /// Per input token written to the provider's prompt cache (Anthropic).
    pub cache_write: f64,
    /// The model's output limit, for estimating a request that sets none.
    pub max_output: u64,
}

/// Per million tokens: name, input, output, cached read, cache write, output limit.
const TABLE: &[(&str, f64, f64, f64, f64, u64)] = &[
    // OpenAI
    ("gpt-5", 1.25, 10.0, 0.125, 0.0, 128_000),
    ("gpt-5-mini", 0.25, 2.0, 0.025, 0.0, 128_000),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.0, 128_000),
    ("gpt-4.1", 2.0, 8.0, 0.50, 0.0, 32_768),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.0, 32_768),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.0, 32_768),
    ("gpt-4o", 2.50, 10.0, 1.25, 0.0, 16_384),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.0, 16_384),
    ("gpt-4-turbo", 10.0, 30.0, 0.0, 0.0, 4_096),
    ("gpt-4", 30.0, 60.0, 0.0, 0.0, 4_096),
    ("gpt-3.5-turbo", 0.50, 1.50, 0.0, 0.0, 4_096),
    ("o1", 15.0, 60.0, 7.50, 0.0, 100_000),
    ("o1-mini", 1.10, 4.40, 0.55, 0.0, 65_536),
    ("o3", 2.0, 8.0, 0.50, 0.0, 100_000),
    ("o3-mini", 1.10, 4.40, 0.55, 0.0, 100_000),
    ("o4-mini", 1.10, 4.40, 0.275, 0.0, 100_000),
    ("text-embedding-3-small", 0.02, 0.0, 0.0, 0.0, 0),
    ("text-embedding-3-large", 0.13, 0.0, 0.0, 0.0, 0),
    ("text-embedding-ada-002", 0.10, 0.0, 0.0, 0.0, 0),
    // Anthropic (also under Bedrock's `anthropic.` ids)
    ("claude-opus-4-5", 5.0, 25.0, 0.50, 6.25, 64_000),
    ("claude-opus-4-1", 15.0, 75.0, 1.50, 18.75, 32_000),
    ("claude-opus-4", 15.0, 75.0, 1.50, 18.75, 32_000),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75, 64_000),
    ("claude-sonnet-4", 3.0, 15.0, 0.30, 3.75, 64_000),
    ("claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25, 64_000),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75, 64_000),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.30, 3.75, 8_192),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0, 8_192),
    ("claude-3-opus", 15.0, 75.0, 1.50, 18.75, 4_096),
    ("claude-3-haiku", 0.25, 1.25, 0.03, 0.30, 4_096),
    // Google Gemini (the up-to-200k-token tier)
    ("gemini-2.5-pro", 1.25, 10.0, 0.31, 0.0, 65_535),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075, 0.0, 65_535),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025, 0.0, 65_535),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025, 0.0, 8_192),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 0.0, 0.0, 8_192),
    ("gemini-1.5-pro", 1.25, 5.0, 0.3125, 0.0, 8_192),
    ("gemini-1.5-flash", 0.075, 0.30, 0.01875, 0.0, 8_192),
    // Mistral
    ("mistral-large", 2.0, 6.0, 0.0, 0.0, 8_192),
    ("mistral-small", 0.10, 0.30, 0.0, 0.0, 8_192),
];

/// The bundled price of an upstream model name, if the table knows it.
pub fn bundled(model: &str) -> Option<Price> {
    let name = normalise(model);
    let mut best: Option<(usize, Price)> = None;
    for &(n, i, o, r, w, m) in TABLE {
        let fits = name == n
            || (name.starts_with(n)
                && matches!(name.as_bytes().get(n.len()), Some(b'-' | b':' | b'@')));
        if fits && best.is_none_or(|(len, _)| n.len() > len) {
            let per = 1e-6;
            best = Some((
                n.len(),
                Price {
                    input: i * per,
                    output: o * per,
                    cache_read: r * per,
                    cache_write: w * per,
                    max_output: m,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

/// The model name without provider path, Bedrock region and vendor prefixes, lower-cased.
fn normalise(model: &str) -> String {
    let mut s = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    for region in ["us.", "eu.", "apac.", "global.", "us-gov."] {
        if let Some(rest) = s.strip_prefix(region) {
            s = rest.to_string();
            break;
        }
    }
    for vendor in ["anthropic.", "models/"] {
        if let Some(rest) = s.strip_prefix(vendor) {
            s = rest.to_string();
        }
    }
    s
}

/// A deployment's prices: the bundled ones with its `model_info` overrides, or `None` when
/// neither knows it (it is then free).
pub fn of(d: &Deployment) -> Option<Price> {
    let base = bundled(&d.model);
    if base.is_none()
        && d.input_cost_per_token.is_none()
        && d.output_cost_per_token.is_none()
        && d.cache_read_input_token_cost.is_none()
    {
        return None;
    }
    let mut p = base.unwrap_or_default();
    if let Some(v) = d.input_cost_per_token {
        p.input = v;
    }
    if let Some(v) = d.output_cost_per_token {
        p.output = v;
    }
    if let Some(v) = d.cache_read_input_token_cost {
        p.cache_read = v;
    }
    Some(p)
}

/// Tokens of one call, as the upstream reported them (OpenAI's convention: cached and
/// cache-write tokens are inside `prompt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    /// Output tokens, reasoning included.
    pub completion: u64,
    /// Input tokens read from the prompt cache.
    pub cached: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }

    /// Reads an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`; Anthropic-style cache counts when present).
    pub fn from_json(u: &serde_json::Value) -> Option<Usage> {
        let obj = u.as_object()?;
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let prompt = obj
            .get("prompt_tokens")
            .or_else(|| obj.get("input_tokens"))
            .map(n)?;
        let completion = obj
            .get("completion_tokens")
            .or_else(|| obj.get("output_tokens"))
            .map(n)
            .unwrap_or(0);
        let cached = n(&u["prompt_tokens_details"]["cached_tokens"]);
        let cache_write = n(&u["cache_creation_input_tokens"]);
        Some(Usage {
            prompt,
            completion,
            cached: cached.min(prompt),
            cache_write: cache_write.min(prompt.saturating_sub(cached)),
        })
    }

    /// Its cost at `price` (uncached input, cached input, cache writes and output apart).
    pub fn cost(&self, price: Option<&Price>) -> f64 {
        let Some(p) = price else { return 0.0 };
        let fresh = self.prompt.saturating_sub(self.cached + self.cache_write);
        fresh as f64 * p.input
            + self.cached as f64 * p.cache_read
            + self.cache_write as f64
                * if p.cache_write > 0.0 {
                    p.cache_write
                } else {
                    p.input
                }
            + self.completion as f64 * p.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_and_prefixed_names_price_as_their_family() {
        let p = bundled("gpt-4o-2024-08-06").unwrap();
        assert!((p.input - 2.5e-6).abs() < 1e-12);
        assert_eq!(bundled("openai/gpt-4o-mini").unwrap().output, 0.60e-6);
        assert_eq!(
            bundled("us.anthropic.claude-3-5-sonnet-20241022-v2:0")
                .unwrap()
                .input,
            3e-6
        );
        assert_eq!(
            bundled("claude-sonnet-4-5-20250929").unwrap().max_output,
            64_000
        );
        assert_eq!(bundled("gemini-2.5-flash-lite").unwrap().input, 0.10e-6);
        // A boundary is required: gpt-4.1 is not gpt-4, o3-mini is not o3.
        assert_eq!(bundled("gpt-4.1").unwrap().input, 2e-6);
        assert_eq!(bundled("o3-mini").unwrap().input, 1.10e-6);
        assert_eq!(bundled("llama-3-8b"), None);
        assert_eq!(bundled("gpt-4oops"), None);
    }

    #[test]
    fn cost_prices_cached_and_fresh_input_apart() {
        let p = bundled("gpt-4o").unwrap();
        let u = Usage::from_json(&serde_json::json!({
            "prompt_tokens": 1000, "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 400}
        }))
        .unwrap();
        let want = 600.0 * 2.5e-6 + 400.0 * 1.25e-6 + 100.0 * 10e-6;
        assert!((u.cost(Some(&p)) - want).abs() < 1e-12);
        assert_eq!(u.cost(None), 0.0);
        assert_eq!(Usage::from_json(&serde_json::json!(null)), None);
    }
}
