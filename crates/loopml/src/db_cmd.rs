//! `loopml db`: migrations and moving an embedded installation onto PostgreSQL.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use loopml::{FileConfig, ServerConfig};
use loopml_store::{Backend, Database, DatabaseConfig};

/// Where the metadata database is: the flags `loopml server`, `loopml serve` and `loopml db
/// migrate` share.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Folder for the SQLite metadata file (loopml.db) and artifacts/ [default: ./loopml-data]
    #[arg(long, env = "LOOPML_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Metadata database: postgres://user:pass@host:port/db for PostgreSQL, or sqlite:///path
    /// [default: sqlite under --data-dir]. MLflow's spelling --backend-store-uri works too
    #[arg(
        long,
        alias = "backend-store-uri",
        env = "LOOPML_DATABASE_URL",
        value_name = "URL"
    )]
    pub database_url: Option<String>,
}

/// `loopml db ...`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply every pending migration to the metadata database and list what is applied (a
    /// server does this at start; run it ahead of a rolling upgrade).
    Migrate {
        /// The database (the config file's when no flag or variable names one).
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Copy every table of an embedded SQLite installation into an empty PostgreSQL database,
    /// in one transaction (all or nothing); stop the servers writing to the source first.
    /// Artifacts stay where they are.
    Copy {
        /// The SQLite database: sqlite:///path/loopml.db or a path
        #[arg(long, value_name = "URL")]
        from: String,
        /// The PostgreSQL database: postgres://user:pass@host:port/db (must hold no loopml
        /// tables yet, unless --replace)
        #[arg(long, value_name = "URL")]
        to: String,
        /// Replace what an already-used target holds
        #[arg(long)]
        replace: bool,
    },
}

/// Runs a `db` subcommand.
pub fn run(cmd: DbCommand, file: FileConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cmd {
        DbCommand::Migrate {
            db: DatabaseArgs {
                database_url,
                data_dir,
            },
        } => {
            let mut config = ServerConfig {
                database_url: database_url.or(file.server.database_url),
                ..ServerConfig::default()
            };
            if let Some(d) = data_dir.or(file.server.data_dir) {
                config.data_dir = d;
            }
            let db_config = config.database_config()?;
            if let Backend::Sqlite { path } = &db_config.backend
                && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let described = db_config.backend.describe();
            let db = Database::open(db_config).context("cannot open the metadata database")?;
            rt.block_on(async {
                let before = db.applied_migrations().await.unwrap_or_default().len();
                loopml::migrate_all(&db)?;
                let applied = db.applied_migrations().await?;
                println!(
                    "{described}: {} migrations applied ({} new)",
                    applied.len(),
                    applied.len().saturating_sub(before)
                );
                for (domain, version, name) in applied {
                    println!("  {domain:<9} {version:>3}  {name}");
                }
                Ok(())
            })
        }
        DbCommand::Copy { from, to, replace } => {
            let source = Backend::from_url(&from).context("invalid --from")?;
            let target = Backend::from_url(&to).context("invalid --to")?;
            let Backend::Sqlite { path } = &source else {
                anyhow::bail!("--from must be a SQLite database (sqlite:///path/loopml.db)");
            };
            anyhow::ensure!(
                path.is_file(),
                "--from {}: no such SQLite file",
                path.display()
            );
            anyhow::ensure!(
                matches!(target, Backend::Postgres { .. }),
                "--to must be a PostgreSQL database (postgres://user:pass@host:port/db)"
            );
            let (from_desc, to_desc) = (source.describe(), target.describe());
            let src = Database::open(DatabaseConfig::new(source))
                .context("cannot open the source database")?;
            let dst = Database::open(DatabaseConfig::new(target))
                .context("cannot open the target database")?;
            rt.block_on(async {
                // A target someone already used would lose its data: refuse unless asked.
                let used = dst.applied_migrations().await.map(|m| !m.is_empty());
                if let Ok(true) = used
                    && !replace
                {
                    anyhow::bail!(
                        "{to_desc} already holds loopml tables; copy into an empty database, \
                         or pass --replace to overwrite what it holds"
                    );
                }
                loopml::migrate_all(&src).context("cannot bring the source up to date")?;
                loopml::migrate_all(&dst).context("cannot create the target's tables")?;
                let t0 = std::time::Instant::now();
                let report = loopml_store::copy_database(&src, &dst)
                    .await
                    .context("copy failed; the target was left unchanged")?;
                for (table, rows) in &report.tables {
                    println!("  {table:<28} {rows:>10} rows");
                }
                println!(
                    "copied {} rows in {} tables from {from_desc} to {to_desc} in {:.1} s",
                    report.total_rows(),
                    report.tables.len(),
                    t0.elapsed().as_secs_f64()
                );
                Ok(())
            })
        }
    }
}
