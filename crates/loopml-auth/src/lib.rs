//! Authentication and authorization for loopml, compatible with MLflow's `basic-auth` app:
//! users with Argon2id password hashes, bearer tokens loopml issues, MLflow's permission
//! model (READ / USE / EDIT / MANAGE / NO_PERMISSIONS / DENY on experiments, registered
//! models and prompts, a default, the creator as owner), its REST API, an audit log, and the
//! layer ([`middleware::guard`]) the binary puts in front of every router.

pub mod audit;
mod cache;
pub mod error;
pub mod hardening;
pub mod middleware;
pub mod password;
pub mod permission;
pub mod policy;
pub mod roles;
pub mod routes;
pub mod service;
pub mod store;

pub use error::{Error, Result};
pub use hardening::{AllowedHosts, harden};
pub use middleware::{Guard, Resolver, guard};
pub use permission::{Action, Permission};
pub use routes::router;
pub use service::{AuthConfig, AuthService, Principal, Visibility};

/// The auth tables' migrations, in order.
pub const MIGRATIONS: &[loopml_store::Migration] = &[
    loopml_store::Migration {
        name: "0001_auth",
        sqlite: include_str!("../migrations/sqlite/0001_auth.sql"),
        postgres: include_str!("../migrations/postgres/0001_auth.sql"),
    },
    loopml_store::Migration {
        name: "0002_roles",
        sqlite: include_str!("../migrations/sqlite/0002_roles.sql"),
        postgres: include_str!("../migrations/postgres/0002_roles.sql"),
    },
];
