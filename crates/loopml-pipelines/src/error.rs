//! The crate's error type: load errors name the file, step and field; run errors name the
//! server call or file that failed.

use std::path::PathBuf;

/// A pipeline error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file could not be read.
    #[error("{}: cannot read the pipeline file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not YAML of the pipeline's shape (syntax, unknown field, wrong type).
    #[error("{file}: not a valid pipeline: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message (with the step and line where known).
        message: String,
    },
    /// The file parses but does not make a valid pipeline (bad name, unknown step, bad
    /// reference, …); the message names the step and field.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, naming the step and field.
        message: String,
    },
    /// The steps' `needs` form a cycle.
    #[error("{file}: the steps form a cycle: {}", cycle.join(" → "))]
    Cycle {
        /// The file.
        file: String,
        /// The steps on the cycle, first step repeated at the end.
        cycle: Vec<String>,
    },
    /// A run option names a param the pipeline does not declare.
    #[error("unknown param `{name}`: the pipeline declares {declared}")]
    UnknownParam {
        /// The param given.
        name: String,
        /// The declared params, comma-separated (or "no params").
        declared: String,
    },
    /// A param declared without a default was not given a value.
    #[error("param `{name}` has no value: give one with --param {name}=VALUE")]
    MissingParam {
        /// The param.
        name: String,
    },
    /// A run option or argument is invalid (e.g. an env name).
    #[error("{0}")]
    Options(String),
    /// No step of that name.
    #[error("the pipeline has no step `{0}`")]
    UnknownStep(String),
    /// The tracking server refused a call or could not be reached.
    #[error("tracking server {uri}: {call}: {message}")]
    Tracking {
        /// The server's base URL.
        uri: String,
        /// The call, e.g. `runs/create`.
        call: String,
        /// The server's `error_code: message`, or the connection error.
        message: String,
    },
    /// The step cache (lock file) or an outputs file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pipeline cannot be exported as an Argo Workflow.
    #[error("argo export: {0}")]
    Export(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
