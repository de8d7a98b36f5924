//! Errors of the gateway crate.

/// What can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is not valid: the message names the key and what is wrong with it.
    #[error("{0}")]
    Config(String),
    /// The gateway's tables could not be read or migrated.
    #[error("gateway store: {0}")]
    Store(#[from] loopml_store::StoreError),
}

/// Result with the gateway's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
