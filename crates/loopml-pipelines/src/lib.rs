//! Pipelines for loopml: a YAML file of steps (shell commands and the built-in kinds
//! `validate`, `register`, `gate`, `promote`) with dependencies, run locally as a DAG with
//! parallelism, a step cache and MLflow tracking (a parent run, one child run per step), or
//! exported as an Argo Workflow. It owns the file format, the scheduler and the lock file; it
//! reaches runs and the registry only through the MLflow REST API of a loopml server.

mod argo;
pub mod cache;
mod error;
mod exec;
mod run;
pub mod spec;
pub mod template;
mod tracker;

pub use argo::{ArgoOptions, export_argo, parse_output_arg, write_outputs};
pub use error::{Error, Result};
pub use run::{LogSink, Outcome, RunOptions, RunReport, StepReport, StepStatus, run, run_step};
pub use spec::{ChampionWithoutMetric, Direction, Kind, Pipeline, ScoreOn, Step, StepKind};
