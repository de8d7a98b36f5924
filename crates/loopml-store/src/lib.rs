//! Storage seam of loopml: the metadata database (SQLite embedded by default, PostgreSQL for
//! scale) and the artifact store (a local folder by default, reached through `object_store`).
//!
//! Domain crates own their tables: they hand their migrations (one script per backend) to
//! [`Database::migrate`] and write portable SQL (`?` placeholders, `ON CONFLICT`, `RETURNING`,
//! row values) through [`Conn`]; they never learn which backend they run on. This crate does
//! not know any domain table.

mod artifacts;
mod bus;
mod db;
mod error;
/// Outbound HTTP policy for user-supplied URLs (SSRF guard).
pub mod outbound;
/// Throwaway databases for tests, on SQLite or PostgreSQL.
pub mod testing;

pub use artifacts::{
    ArtifactEntry, ArtifactPath, ArtifactRead, ArtifactStore, ByteRange, ByteStream,
    MAX_UPLOAD_PARTS,
};
pub use bus::ChangeBus;

/// Which resources of one kind a request's user may read: put on a search request by the auth
/// layer, so the search filters in SQL (a page holds `max_results` readable rows and page
/// tokens walk every readable row once) instead of dropping rows from a finished page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    /// Every resource except these ids.
    AllBut(Vec<String>),
    /// Only these ids.
    Only(Vec<String>),
}

/// The experiments an experiments search may return (a request extension; absent: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadableExperiments(pub Readable);

/// The header the auth layer sets on a gateway request after it authenticated a loopml
/// credential (`admin:<user>`, `user:<user>` or `reader:<user>` for a read-only token); it
/// strips any copy a client sent, and the gateway trusts it only when told to
/// (`Gateway::set_require_auth`).
pub const PRINCIPAL_HEADER: &str = "x-loopml-principal";
pub use db::{
    Backend, Conn, CopyReport, Database, DatabaseConfig, Durability, Migration, Row,
    STORE_MIGRATIONS, Value, copy_database, lease_holder, to_dollar_placeholders,
};
pub use error::StoreError;
