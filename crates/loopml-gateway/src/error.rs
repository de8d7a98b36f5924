//! Errors of the gateway crate.

/// What can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is not valid: the message names the key and what is wrong with it.
    #[error("{0}")]
    Config(String),
}

/// Result with the gateway's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
