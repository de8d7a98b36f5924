//! Storage seam of loopml: the metadata database (SQLite embedded by default) and the artifact
//! store (a local folder by default, reached through `object_store`).
//!
//! Domain crates own their tables: they hand their migrations to [`Database::migrate`] and write
//! portable SQL (`?` placeholders, `ON CONFLICT`, row values) through [`Conn`], so a PostgreSQL
//! backend can be added here without touching them. This crate does not know any domain table.

mod artifacts;
mod db;
mod error;

pub use artifacts::{ArtifactEntry, ArtifactPath, ArtifactStore, ByteStream};
pub use db::{Conn, Database, DatabaseConfig, Durability, Migration, Row, Value};
pub use error::StoreError;
