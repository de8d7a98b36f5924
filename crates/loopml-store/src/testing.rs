//! Test support for every crate's tests: a fresh, empty metadata database per test on SQLite,
//! or on PostgreSQL when `LOOPML_TEST_DATABASE_URL` names a server (an administrative URL, e.g.
//! `postgres://postgres@127.0.0.1:55432/postgres`; each test gets a database of its own,
//! created here and dropped afterwards). Compiled always, not behind a feature: a feature that
//! only tests turn on would make cargo build the store and every crate above it twice (once
//! for the tests, once for the binary), minutes on CI's two cores. Nothing in the product
//! calls it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Backend, Database, DatabaseConfig};

/// The environment variable naming the PostgreSQL server tests run against.
pub const TEST_DATABASE_URL: &str = "LOOPML_TEST_DATABASE_URL";

/// The environment variable naming an object store tests keep artifacts in (e.g.
/// `s3://loopml-test`, with `AWS_ENDPOINT_URL` pointing at scripts/s3.sh's server); each store
/// gets a prefix of its own under it.
pub const TEST_ARTIFACTS_URL: &str = "LOOPML_TEST_ARTIFACTS_URL";

/// Tells apart the object-store prefixes of one test process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The artifact store tests run against: under `LOOPML_TEST_ARTIFACTS_URL` when set (a fresh
/// prefix), else a folder `art` under `dir`.
pub fn test_artifact_store(dir: &std::path::Path) -> crate::ArtifactStore {
    test_artifact_stores(dir)
        .pop()
        .unwrap_or_else(|| panic!("no artifact store for {}", dir.display()))
}

/// One artifact store per available backend: the local folder `dir/art` always, and a fresh
/// prefix under `LOOPML_TEST_ARTIFACTS_URL` when set.
pub fn test_artifact_stores(dir: &std::path::Path) -> Vec<crate::ArtifactStore> {
    let mut out = vec![
        crate::ArtifactStore::local(dir.join("art"))
            .unwrap_or_else(|e| panic!("cannot open a local artifact store: {e}")),
    ];
    if let Ok(url) = std::env::var(TEST_ARTIFACTS_URL)
        && !url.trim().is_empty()
    {
        let prefix = format!(
            "{}/t{}-{}",
            url.trim().trim_end_matches('/'),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        out.push(
            crate::ArtifactStore::open(&prefix)
                .unwrap_or_else(|e| panic!("cannot open the test artifact store {prefix}: {e}")),
        );
    }
    out
}

/// A throwaway database for one test; removed when dropped.
pub struct TestDatabase {
    config: DatabaseConfig,
    db: Database,
    dir: TempDir,
    /// For PostgreSQL: the admin URL and the database's name, to drop it afterwards.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A database on the backend the test run is configured for: PostgreSQL when
    /// `LOOPML_TEST_DATABASE_URL` is set, else a SQLite file in a temporary folder.
    pub fn new() -> Self {
        match std::env::var(TEST_DATABASE_URL) {
            Ok(url) if !url.trim().is_empty() => Self::postgres(url.trim()),
            _ => Self::sqlite(),
        }
    }

    /// One database per available backend: SQLite always, PostgreSQL when configured.
    pub fn all() -> Vec<Self> {
        let mut out = vec![Self::sqlite()];
        if let Ok(url) = std::env::var(TEST_DATABASE_URL)
            && !url.trim().is_empty()
        {
            out.push(Self::postgres(url.trim()));
        }
        out
    }

    /// A SQLite database in a temporary folder.
    pub fn sqlite() -> Self {
        let dir = TempDir::new();
        let config = DatabaseConfig::sqlite(dir.0.join("test.db"));
        let db = Database::open(config.clone()).expect("open the SQLite test database");
        Self {
            config,
            db,
            dir,
            postgres: None,
        }
    }

    /// A fresh database on the PostgreSQL server at `admin_url`.
    pub fn postgres(admin_url: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "loopml_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin(admin_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create a test database on {admin_url}: {e}"));
        let config = DatabaseConfig::postgres(with_database(admin_url, &name));
        let db = Database::open(config.clone()).expect("open the PostgreSQL test database");
        Self {
            config,
            db,
            dir: TempDir::new(),
            postgres: Some((admin_url.to_string(), name)),
        }
    }

    /// The database handle.
    pub fn database(&self) -> Database {
        self.db.clone()
    }

    /// A second, independent handle on the same database (another process, in effect).
    pub fn open_another(&self) -> Database {
        Database::open(self.config.clone()).expect("reopen the test database")
    }

    /// The configuration (e.g. to start a server on the same database).
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    /// The database as a `--database-url` value.
    pub fn url(&self) -> String {
        match &self.config.backend {
            Backend::Sqlite { path } => path.display().to_string(),
            Backend::Postgres { url } => url.clone(),
        }
    }

    /// A temporary folder that lives as long as the database (artifacts, files).
    pub fn dir(&self) -> PathBuf {
        self.dir.0.clone()
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            let _ = admin(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A folder under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "loopml-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("a temporary folder for the test database");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// Runs one administrative statement on its own thread and runtime (callable from anywhere,
/// also from inside a test's runtime).
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let url = url.to_string();
    let sql = sql.to_string();
    std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let driver = async move {
                let _ = conn.await;
            };
            let work = async move { client.batch_execute(&sql).await.map_err(|e| e.to_string()) };
            tokio::select! {
                r = work => r,
                _ = driver => Err("the connection closed".to_string()),
            }
        })
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_string())?
}

/// One fuzzing step of [`mutate`]: `(what, where, byte)`; every value is meaningful, so a
/// property-test strategy can generate them freely.
pub type Mutation = (u8, usize, u8);

/// A fuzzer's mutation of `seed` (the parsers' fuzz tests run it on their committed corpora):
/// per step a byte flipped, the input cut, a byte inserted, or a slice of it repeated (at most
/// 512 bytes each time). Deterministic for the same steps, so a failing case replays.
pub fn mutate(seed: &[u8], steps: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for &(op, at, byte) in steps {
        let n = b.len().max(1);
        match op % 4 {
            0 if !b.is_empty() => b[at % n] ^= byte | 1,
            1 => b.truncate(at % (b.len() + 1)),
            2 => b.insert(at % (b.len() + 1), byte),
            _ => {
                let tail: Vec<u8> = b.iter().skip(at % n).copied().collect();
                b.extend_from_slice(&tail[..tail.len().min(512)]);
            }
        }
    }
    b
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }
}
