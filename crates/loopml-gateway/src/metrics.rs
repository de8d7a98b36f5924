//! The gateway's Prometheus metrics, in the same `/metrics` scrape as the rest of loopml (or on
//! the gateway's own `/metrics` when it runs alone): requests, tokens and spend per model group,
//! latency and the gateway's **added** latency as histograms, upstream errors and cooldowns per
//! deployment, admissions refused by reason, requests in flight, and the spend log's backlog.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by model group and outcome (`success`, or the HTTP status).
    pub requests: Family<Labels, Counter>,
    /// Tokens by model group and kind (`prompt`, `completion`, `cached`).
    pub tokens: Family<Labels, Counter>,
    /// USD spent by model group.
    pub spend: Family<Labels, Counter<f64, AtomicU64>>,
    /// Seconds from request to the end of the answer (its headers, for a stream).
    pub latency: Family<Labels, Histogram>,
    /// Seconds the gateway itself added (total minus the upstream's time).
    pub overhead: Histogram,
    /// Failed upstream attempts by deployment.
    pub upstream_errors: Family<Labels, Counter>,
    /// Cooldowns begun by deployment.
    pub cooldowns: Family<Labels, Counter>,
    /// Calls not admitted, by reason (`budget`, `rpm`, `tpm`, `parallel`, `auth`, `model`).
    pub refused: Family<Labels, Counter>,
    /// Calls in flight.
    pub in_flight: Gauge<i64, AtomicI64>,
    /// Spend-log rows waiting for the database.
    pub log_pending: Gauge<i64, AtomicI64>,
    /// Spend-log rows dropped (database away too long).
    pub log_dropped: Gauge<i64, AtomicI64>,
    /// Admissions counted in memory because Redis did not answer.
    pub counter_fallbacks: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("loopml_gateway");
        let requests = Family::<Labels, Counter>::default();
        let tokens = Family::<Labels, Counter>::default();
        let spend = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        // 25 µs to ~0.4 s: the added latency is expected well under a millisecond.
        let overhead = Histogram::new(exponential_buckets(0.000_025, 2.0, 15));
        let upstream_errors = Family::<Labels, Counter>::default();
        let cooldowns = Family::<Labels, Counter>::default();
        let refused = Family::<Labels, Counter>::default();
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let log_pending = Gauge::<i64, AtomicI64>::default();
        let log_dropped = Gauge::<i64, AtomicI64>::default();
        let counter_fallbacks = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "requests",
            "Gateway requests by model group and outcome",
            requests.clone(),
        );
        registry.register("tokens", "Tokens by model group and kind", tokens.clone());
        registry.register("spend_usd", "USD spent by model group", spend.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a gateway request",
            latency.clone(),
        );
        registry.register(
            "overhead_seconds",
            "Latency the gateway added to a request",
            overhead.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream attempts by deployment",
            upstream_errors.clone(),
        );
        registry.register("cooldowns", "Deployment cooldowns begun", cooldowns.clone());
        registry.register(
            "refused",
            "Calls refused before the upstream, by reason",
            refused.clone(),
        );
        registry.register("in_flight", "Gateway calls in flight", in_flight.clone());
        registry.register(
            "spend_log_pending_rows",
            "Spend-log rows waiting for the database",
            log_pending.clone(),
        );
        registry.register(
            "spend_log_dropped_rows",
            "Spend-log rows dropped while the database was away",
            log_dropped.clone(),
        );
        registry.register(
            "counter_fallbacks",
            "Admissions counted in memory because Redis did not answer",
            counter_fallbacks.clone(),
        );
        Metrics {
            registry,
            requests,
            tokens,
            spend,
            latency,
            overhead,
            upstream_errors,
            cooldowns,
            refused,
            in_flight,
            log_pending,
            log_dropped,
            counter_fallbacks,
        }
    }
}

/// One label pair.
pub fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
