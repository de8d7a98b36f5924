//! Data for the loop: content-addressed dataset versions with schema and profile, expectation
//! suites and their validation results, and drift statistics between a reference and a current
//! dataset — all computed on Arrow record batches, streaming, so files larger than memory work.
//! It owns the dataset tables and routes; it does not own runs (tracking) or models (registry).

pub mod checks;
pub mod diff;
pub mod drift;
pub mod error;
pub mod html;
pub mod profile;
pub mod reader;
pub mod routes;
pub mod stats;
pub mod validate;
pub mod versions;

pub use error::{Error, Result};
