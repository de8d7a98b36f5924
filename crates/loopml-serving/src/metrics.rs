//! Serving metrics in Prometheus text format (`/metrics`): requests by deployment, variant, model
//! version and status; request latency, queue time and batch size histograms (in seconds and rows,
//! as `_bucket`/`_sum`/`_count`); models loaded; inference-log throughput and drops.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one answered request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Deployment (endpoint) name.
    pub deployment: String,
    /// Variant that answered (`default` for a plain model).
    pub variant: String,
    /// Model version that answered.
    pub model_version: String,
    /// `ok`, `client_error`, `overloaded` or `error`.
    pub status: String,
}

/// Labels of a per-variant latency series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabels {
    /// Deployment (endpoint) name.
    pub deployment: String,
    /// Variant.
    pub variant: String,
    /// Model version.
    pub model_version: String,
}

/// Labels of a loaded model version (queue and batch series).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Loaded model name (a deployment's variant is `deployment.variant`).
    pub model: String,
    /// Version.
    pub version: String,
}

fn latency_histogram() -> Histogram {
    // 25 µs … ~13 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 20))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// The serving metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VariantLabels, Histogram>,
    shadow: Family<VariantLabels, Counter>,
    queue: Family<ModelLabels, Histogram>,
    batch: Family<ModelLabels, Histogram>,
    models_loaded: Gauge,
    log_records: Counter,
    log_dropped: Counter,
    rollbacks: Family<Vec<(String, String)>, Counter>,
    /// Rewards received per deployment and variant (bandit feedback).
    rewards: Family<Vec<(String, String)>, Counter<f64, AtomicU64>>,
    /// deployment → variant → version → (ok counter, latency histogram).
    answered_cache: std::sync::RwLock<AnsweredCache>,
    sources: std::sync::RwLock<Vec<MetricsSource>>,
}

/// Another part's metrics, as OpenMetrics text.
pub type MetricsSource = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

type AnsweredCache = std::collections::HashMap<
    String,
    std::collections::HashMap<String, std::collections::HashMap<String, (Counter, Histogram)>>,
>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metric families.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("loopml");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<VariantLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> _,
        );
        let shadow = Family::<VariantLabels, Counter>::default();
        let queue =
            Family::<ModelLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let batch =
            Family::<ModelLabels, Histogram>::new_with_constructor(batch_histogram as fn() -> _);
        let models_loaded = Gauge::default();
        let log_records = Counter::default();
        let log_dropped = Counter::default();
        let rollbacks = Family::<Vec<(String, String)>, Counter>::default();
        let rewards = Family::<Vec<(String, String)>, Counter<f64, AtomicU64>>::default();
        registry.register(
            "inference_requests",
            "Inference requests answered, by deployment, variant, model version and status",
            requests.clone(),
        );
        registry.register(
            "inference_request_duration_seconds",
            "Time from request received to answer ready, by deployment, variant and model version",
            latency.clone(),
        );
        registry.register(
            "shadow_requests",
            "Mirrored (shadow) requests run, by deployment, variant and model version",
            shadow.clone(),
        );
        registry.register(
            "inference_queue_duration_seconds",
            "Time a request waited in its model's batching queue",
            queue.clone(),
        );
        registry.register(
            "inference_batch_size",
            "Rows per model call (dynamic batches and single requests)",
            batch.clone(),
        );
        registry.register(
            "models_loaded",
            "Model versions loaded",
            models_loaded.clone(),
        );
        registry.register(
            "inference_log_records",
            "Inference-log records written",
            log_records.clone(),
        );
        registry.register(
            "inference_log_dropped",
            "Inference-log records dropped because the log's queue was full",
            log_dropped.clone(),
        );
        registry.register(
            "deployment_rollbacks",
            "Automatic canary rollbacks, by deployment",
            rollbacks.clone(),
        );
        registry.register(
            "deployment_rewards",
            "Sum of rewards received by feedback, by deployment and variant",
            rewards.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            shadow,
            queue,
            batch,
            models_loaded,
            log_records,
            log_dropped,
            rollbacks,
            rewards,
            answered_cache: std::sync::RwLock::default(),
            sources: std::sync::RwLock::default(),
        }
    }

    /// Counts one answered request and its latency: the request path's call, which looks its
    /// counter and histogram up by `&str` in a cache (no label strings built per request).
    pub fn answered(&self, deployment: &str, variant: &str, version: &str, seconds: f64) {
        let hit = self.answered_cache.read().ok().and_then(|c| {
            c.get(deployment)
                .and_then(|d| d.get(variant))
                .and_then(|v| v.get(version))
                .cloned()
        });
        let (ok, latency) = match hit {
            Some(h) => h,
            None => {
                let labels = VariantLabels {
                    deployment: deployment.to_string(),
                    variant: variant.to_string(),
                    model_version: version.to_string(),
                };
                let ok = self
                    .requests
                    .get_or_create(&RequestLabels {
                        deployment: labels.deployment.clone(),
                        variant: labels.variant.clone(),
                        model_version: labels.model_version.clone(),
                        status: "ok".to_string(),
                    })
                    .clone();
                let latency = self.latency.get_or_create(&labels).clone();
                if let Ok(mut c) = self.answered_cache.write() {
                    c.entry(labels.deployment)
                        .or_default()
                        .entry(labels.variant)
                        .or_default()
                        .insert(labels.model_version, (ok.clone(), latency.clone()));
                }
                (ok, latency)
            }
        };
        ok.inc();
        latency.observe(seconds);
    }

    /// Counts one request by status, and its latency when it was answered.
    pub fn request(&self, v: &VariantLabels, status: &str, seconds: Option<f64>) {
        self.requests
            .get_or_create(&RequestLabels {
                deployment: v.deployment.clone(),
                variant: v.variant.clone(),
                model_version: v.model_version.clone(),
                status: status.to_string(),
            })
            .inc();
        if let Some(s) = seconds {
            self.latency.get_or_create(v).observe(s);
        }
    }

    /// Counts one shadow request.
    pub fn shadow(&self, v: &VariantLabels) {
        self.shadow.get_or_create(v).inc();
    }

    /// The batch-size and queue-time histograms of one model version, for its queue (which
    /// keeps them: no lookup per call).
    pub fn queue_observer(&self, model: &ModelLabels) -> crate::batcher::BatchObserver {
        crate::batcher::BatchObserver {
            batch_sizes: self.batch.get_or_create(model).clone(),
            queue_seconds: self.queue.get_or_create(model).clone(),
        }
    }

    /// Sets the number of loaded model versions.
    pub fn set_models_loaded(&self, n: usize) {
        self.models_loaded.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts inference-log records written.
    pub fn log_written(&self, n: u64) {
        self.log_records.inc_by(n);
    }

    /// Counts inference-log records dropped.
    pub fn log_dropped(&self, n: u64) {
        self.log_dropped.inc_by(n);
    }

    /// Counts an automatic rollback.
    pub fn rollback(&self, deployment: &str) {
        self.rollbacks
            .get_or_create(&vec![("deployment".into(), deployment.into())])
            .inc();
    }

    /// Adds a reward.
    pub fn reward(&self, deployment: &str, variant: &str, reward: f64) {
        self.rewards
            .get_or_create(&vec![
                ("deployment".into(), deployment.into()),
                ("variant".into(), variant.into()),
            ])
            .inc_by(reward.max(0.0));
    }

    /// Adds another part's metrics to `/metrics` (e.g. monitors): `source` returns their
    /// OpenMetrics text; its `# EOF` line is dropped.
    pub fn add_source(&self, source: MetricsSource) {
        if let Ok(mut s) = self.sources.write() {
            s.push(source);
        }
    }

    /// The Prometheus text exposition of every metric (serving's, then each added source's).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        let sources = self.sources.read().map(|s| s.clone()).unwrap_or_default();
        if sources.is_empty() {
            return out;
        }
        let mut body = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        for source in sources {
            let text = source();
            body.push_str(text.strip_suffix("# EOF\n").unwrap_or(&text));
        }
        body.push_str("# EOF\n");
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_histograms_and_labels() {
        let m = Metrics::new();
        let v = VariantLabels {
            deployment: "churn".into(),
            variant: "stable".into(),
            model_version: "3".into(),
        };
        m.request(&v, "ok", Some(0.0004));
        m.request(&v, "ok", Some(0.0004));
        m.request(&v, "error", None);
        let obs = m.queue_observer(&ModelLabels {
            model: "churn.stable".into(),
            version: "3".into(),
        });
        obs.batch_sizes.observe(8.0);
        (0..8).for_each(|_| obs.queue_seconds.observe(0.0001));
        m.set_models_loaded(2);
        let text = m.encode();
        assert!(text.contains(
            "loopml_inference_requests_total{deployment=\"churn\",variant=\"stable\",model_version=\"3\",status=\"ok\"} 2"
        ), "{text}");
        assert!(text.contains("status=\"error\"} 1"), "{text}");
        assert!(text.contains("loopml_inference_request_duration_seconds_count{deployment=\"churn\",variant=\"stable\",model_version=\"3\"} 2"), "{text}");
        assert!(
            text.contains(
                "loopml_inference_batch_size_sum{model=\"churn.stable\",version=\"3\"} 8"
            ),
            "{text}"
        );
        assert!(
            text.contains("loopml_inference_queue_duration_seconds_count{model=\"churn.stable\",version=\"3\"} 8"),
            "{text}"
        );
        assert!(text.contains("loopml_models_loaded 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
