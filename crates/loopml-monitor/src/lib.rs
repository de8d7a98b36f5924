//! Monitors for loopml: checks over a deployment's inference log against a reference dataset
//! version — feature drift, prediction drift, data-quality suites and, from labels sent as
//! feedback, model performance — stored as a time series per monitor and check, exported as
//! Prometheus gauges, with alerts delivered from an outbox to webhooks and pipeline triggers.

pub mod compare;
pub mod error;
pub mod eval;
pub mod routes;
pub mod service;
pub mod spec;

pub use error::{Error, Result};
pub use eval::{CheckResult, Evaluation, Evaluator};
pub use service::{Alert, AlertHandler, MonitorService};
pub use spec::MonitorSpec;
