//! The registry service: every registry operation as a plain async method. Writes run in one
//! store transaction together with the change-feed event they produce, so a change and its
//! event are committed (or rolled back) together.

use std::sync::Arc;
use std::time::Duration;

use loopml_store::{Database, Value};
use loopml_tracking::TrackingService;
use loopml_tracking::model::{KeyValue, Page};
use loopml_tracking::validation::{decode_page_token, encode_page_token};
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{ModelVersion, RegisteredModel, RegistryEvent, Stage};
use crate::search;
use crate::sql::{self, VERSION_COLUMNS};
use crate::validation::{self as v, MAX_MODELS_SEARCH, MAX_VERSIONS_SEARCH};

mod versions;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    loopml_tracking::now_ms()
}

/// What a new model version is created from.
#[derive(Debug, Clone, Default)]
pub struct NewModelVersion {
    /// Registered model name.
    pub name: String,
    /// Source URI.
    pub source: String,
    /// Training run, when known.
    pub run_id: Option<String>,
    /// Logged model id, when known.
    pub model_id: Option<String>,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Link to the run.
    pub run_link: Option<String>,
    /// Description.
    pub description: Option<String>,
}

pub(crate) struct Inner {
    db: Database,
    tracking: TrackingService,
    /// Latest committed feed sequence number; long-polls wait on it.
    feed: tokio::sync::watch::Sender<i64>,
    /// The same, for the webhook delivery thread.
    wake: Arc<crate::webhooks::Wake>,
    /// Finds stored dataset versions behind logged datasets (set by the binary).
    datasets: std::sync::OnceLock<Arc<dyn crate::lineage::DatasetLinker>>,
    deployments: std::sync::OnceLock<Arc<dyn crate::lineage::DeploymentFinder>>,
    /// Tells other replicas about committed events (set by the binary with `--redis-url`).
    bus: std::sync::OnceLock<loopml_store::ChangeBus>,
    /// Which addresses webhook deliveries may reach (set by the binary; refusing by default).
    outbound: std::sync::OnceLock<loopml_store::outbound::OutboundPolicy>,
}

/// The change-bus topic of registry events.
const CHANGE_TOPIC: &str = "registry";

/// The model registry; cheap to clone.
#[derive(Clone)]
pub struct RegistryService {
    inner: Arc<Inner>,
}

fn model_version_payload(mv: &ModelVersion) -> serde_json::Value {
    let tags: serde_json::Map<String, serde_json::Value> = mv
        .tags
        .iter()
        .map(|t| (t.key.clone(), json!(t.value)))
        .collect();
    json!({
        "name": mv.name,
        "version": mv.version.to_string(),
        "source": mv.source,
        "run_id": mv.run_id,
        "model_id": mv.model_id,
        "tags": tags,
        "description": mv.description,
    })
}

/// Splits `models:/...` into its parts: a logged model id, or a name with a version, stage or
/// alias.
enum ModelsUri {
    LoggedModel(String),
    Registered { name: String, selector: String },
}

fn parse_models_uri(source: &str) -> Result<ModelsUri> {
    let bad = || {
        Error::InvalidParameter(format!(
            "Invalid model version source: '{source}'. Expected models:/<model_id>, \
             models:/<name>/<version or stage> or models:/<name>@<alias>."
        ))
    };
    let rest = source.strip_prefix("models:").ok_or_else(bad)?;
    if rest.starts_with("//") {
        return Err(Error::InvalidParameter(format!(
            "Invalid model version source: '{source}'. Registered model sources must use the \
             active model registry."
        )));
    }
    let rest = rest.trim_start_matches('/');
    if let Some((name, alias)) = rest.split_once('@') {
        if name.is_empty() || alias.is_empty() || alias.contains('/') {
            return Err(bad());
        }
        return Ok(ModelsUri::Registered {
            name: name.to_string(),
            selector: format!("@{alias}"),
        });
    }
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [id] if !id.is_empty() => Ok(ModelsUri::LoggedModel((*id).to_string())),
        [name, sel] if !name.is_empty() && !sel.is_empty() => Ok(ModelsUri::Registered {
            name: (*name).to_string(),
            selector: (*sel).to_string(),
        }),
        _ => Err(bad()),
    }
}

fn has_relative_parts(uri: &str) -> bool {
    let path = uri.split_once("://").map_or(uri, |(_, p)| p);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.split('/')
        .any(|s| s == ".." || s == "%2e%2e" || s == "%2E%2E")
}

fn is_within(uri: &str, root: &str) -> bool {
    let norm = |u: &str| -> Vec<String> {
        u.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (u, r) = (norm(uri), norm(root));
    !r.is_empty() && u.len() >= r.len() && u[..r.len()] == r[..]
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService")
            .field("db", &self.inner.db)
            .field("feed_seq", &*self.inner.feed.borrow())
            .finish()
    }
}

impl RegistryService {
    /// Builds the service on an opened store (applies the registry migrations).
    pub fn new(db: Database, tracking: TrackingService) -> Result<Self> {
        db.migrate("store", loopml_store::STORE_MIGRATIONS)?;
        db.migrate("registry", crate::MIGRATIONS)?;
        let (feed, _) = tokio::sync::watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tracking,
                feed,
                wake: Arc::default(),
                datasets: std::sync::OnceLock::new(),
                deployments: std::sync::OnceLock::new(),
                bus: std::sync::OnceLock::new(),
                outbound: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Announces committed events to other replicas through `bus`, and wakes this replica's
    /// long-polls and webhook delivery when another replica announces one (instead of on the
    /// next one-second re-read). Only the first call has an effect; must run in the runtime.
    pub fn set_change_bus(&self, bus: loopml_store::ChangeBus) {
        if self.inner.bus.set(bus.clone()).is_err() {
            return;
        }
        let mut rx = bus.watch(CHANGE_TOPIC);
        let weak = self.downgrade();
        // Lives as long as the service.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let seq = *rx.borrow_and_update();
                let Some(s) = Self::upgrade(&weak) else {
                    return;
                };
                s.inner.wake.notify(seq);
                // Always a wake-up, even for a number already seen: the waiters re-read.
                s.inner.feed.send_modify(|cur| *cur = (*cur).max(seq));
            }
        });
    }

    /// Sets which addresses webhook deliveries may reach (`--outbound-allow`); without it
    /// loopback, link-local and metadata addresses are refused. Only the first call has an
    /// effect.
    pub fn set_outbound_policy(&self, policy: loopml_store::outbound::OutboundPolicy) {
        let _ = self.inner.outbound.set(policy);
    }

    pub(crate) fn outbound(&self) -> loopml_store::outbound::OutboundPolicy {
        self.inner.outbound.get().cloned().unwrap_or_default()
    }

    /// Lets lineage link the datasets runs logged to stored dataset versions (the data crate's
    /// store, wired in by the binary). Only the first call has an effect.
    pub fn set_dataset_linker(&self, linker: Arc<dyn crate::lineage::DatasetLinker>) {
        let _ = self.inner.datasets.set(linker);
    }

    /// Lets lineage list the deployments serving a version (the serving layer, wired in by the
    /// binary). Only the first call has an effect.
    pub fn set_deployment_finder(&self, finder: Arc<dyn crate::lineage::DeploymentFinder>) {
        let _ = self.inner.deployments.set(finder);
    }

    pub(crate) fn deployment_finder(&self) -> Option<&Arc<dyn crate::lineage::DeploymentFinder>> {
        self.inner.deployments.get()
    }

    pub(crate) fn dataset_linker(&self) -> Option<&Arc<dyn crate::lineage::DatasetLinker>> {
        self.inner.datasets.get()
    }

    /// The tracking service the registry resolves runs and logged models through.
    pub fn tracking(&self) -> &TrackingService {
        &self.inner.tracking
    }

    fn db(&self) -> &Database {
        &self.inner.db
    }

    pub(crate) fn db_handle(&self) -> &Database {
        &self.inner.db
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    pub(crate) fn wake(&self) -> Arc<crate::webhooks::Wake> {
        Arc::clone(&self.inner.wake)
    }

    /// Announces a committed event to long-polls and webhook delivery, here and (through the
    /// change bus) on the other replicas.
    fn published(&self, seq: Option<i64>) {
        if let Some(seq) = seq {
            if let Some(bus) = self.inner.bus.get() {
                bus.announce(CHANGE_TOPIC, seq);
            }
            self.inner.wake.notify(seq);
            self.inner.feed.send_if_modified(|cur| {
                if seq > *cur {
                    *cur = seq;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Subscribes to "the feed moved" notifications.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.feed.subscribe()
    }

    // ------------------------------------------------------------ registered models

    /// Creates a registered model.
    pub async fn create_registered_model(
        &self,
        name: String,
        tags: Vec<KeyValue>,
        description: Option<String>,
    ) -> Result<RegisteredModel> {
        v::validate_model_name(&name, "name")?;
        for t in &tags {
            v::validate_tag(&t.key, &t.value)?;
        }
        let (model, seq) = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let exists = c.query_opt(
                    "SELECT id FROM registered_models WHERE name = ?1",
                    &[(&name).into()],
                    |r| r.i64(0),
                )?;
                if exists.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "Registered Model (name={name}) already exists."
                    )));
                }
                let key = c
                    .query_opt(
                        "INSERT INTO registered_models (name, creation_time, last_updated_time, \
                         description) VALUES (?1, ?2, ?2, ?3) RETURNING id",
                        &[(&name).into(), now.into(), description.as_ref().into()],
                        |r| r.i64(0),
                    )?
                    .ok_or_else(|| Error::NotFound(name.clone()))?;
                for t in &tags {
                    c.execute(
                        "INSERT INTO registered_model_tags (model, key, value) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (model, key) DO UPDATE SET value = excluded.value",
                        &[key.into(), (&t.key).into(), (&t.value).into()],
                    )?;
                }
                let row = sql::model_row(c, &name)?;
                let model = sql::load_model(c, row)?;
                let tag_map: serde_json::Map<String, serde_json::Value> = model
                    .tags
                    .iter()
                    .map(|t| (t.key.clone(), json!(t.value)))
                    .collect();
                let seq = sql::record_event(
                    c,
                    now,
                    "registered_model.created",
                    &name,
                    None,
                    &json!({"name": name, "tags": tag_map, "description": model.description}),
                )?;
                Ok((model, seq))
            })
            .await?;
        self.published(Some(seq));
        Ok(model)
    }

    /// Gets a registered model by name.
    pub async fn get_registered_model(&self, name: String) -> Result<RegisteredModel> {
        v::validate_model_name(&name, "name")?;
        self.db()
            .read(move |c| -> Result<_> {
                let row = sql::model_row(c, &name)?;
                sql::load_model(c, row)
            })
            .await
    }

    /// Sets a registered model's description.
    pub async fn update_registered_model(
        &self,
        name: String,
        description: Option<String>,
    ) -> Result<RegisteredModel> {
        v::validate_model_name(&name, "name")?;
        let (model, seq) = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                c.execute(
                    "UPDATE registered_models SET description = ?2, last_updated_time = ?3 \
                     WHERE id = ?1",
                    &[row.key.into(), description.as_ref().into(), now.into()],
                )?;
                let seq = sql::record_event(
                    c,
                    now,
                    "registered_model.updated",
                    &name,
                    None,
                    &json!({"name": name, "description": description}),
                )?;
                let row = sql::model_row(c, &name)?;
                Ok((sql::load_model(c, row)?, seq))
            })
            .await?;
        self.published(Some(seq));
        Ok(model)
    }

    /// Renames a registered model; its versions, tags and aliases follow.
    pub async fn rename_registered_model(
        &self,
        name: String,
        new_name: String,
    ) -> Result<RegisteredModel> {
        v::validate_model_name(&name, "name")?;
        v::validate_model_name(&new_name, "new_name")?;
        let (model, seq) = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                if name != new_name {
                    let taken = c.query_opt(
                        "SELECT id FROM registered_models WHERE name = ?1",
                        &[(&new_name).into()],
                        |r| r.i64(0),
                    )?;
                    if taken.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "Registered Model (name={new_name}) already exists."
                        )));
                    }
                }
                c.execute(
                    "UPDATE registered_models SET name = ?2, last_updated_time = ?3 WHERE id = ?1",
                    &[row.key.into(), (&new_name).into(), now.into()],
                )?;
                c.execute(
                    "UPDATE model_versions SET last_updated_time = ?2 WHERE model = ?1",
                    &[row.key.into(), now.into()],
                )?;
                let seq = sql::record_event(
                    c,
                    now,
                    "registered_model.renamed",
                    &new_name,
                    None,
                    &json!({"name": new_name, "old_name": name}),
                )?;
                let row = sql::model_row(c, &new_name)?;
                Ok((sql::load_model(c, row)?, seq))
            })
            .await?;
        self.published(Some(seq));
        Ok(model)
    }

    /// Deletes a registered model with all its versions, tags and aliases.
    pub async fn delete_registered_model(&self, name: String) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                let versions = c.query(
                    "SELECT version FROM model_versions WHERE model = ?1 ORDER BY version",
                    &[row.key.into()],
                    |r| r.i64(0),
                )?;
                let seq = sql::record_event(
                    c,
                    now,
                    "registered_model.deleted",
                    &name,
                    None,
                    &json!({"name": name, "deleted_versions": versions}),
                )?;
                // Explicit deletes keep the store consistent even where foreign keys are off.
                for table in [
                    "registered_model_aliases",
                    "model_version_tags",
                    "model_versions",
                    "registered_model_tags",
                ] {
                    c.execute(
                        &format!("DELETE FROM {table} WHERE model = ?1"),
                        &[row.key.into()],
                    )?;
                }
                c.execute(
                    "DELETE FROM registered_models WHERE id = ?1",
                    &[row.key.into()],
                )?;
                Ok(seq)
            })
            .await?;
        self.published(Some(seq));
        Ok(())
    }

    /// Searches registered models with MLflow's filter grammar.
    pub async fn search_registered_models(
        &self,
        filter: Option<String>,
        max_results: Option<i64>,
        order_by: Vec<String>,
        page_token: Option<String>,
    ) -> Result<Page<RegisteredModel>> {
        let max = max_results.unwrap_or(100);
        if !(1..=MAX_MODELS_SEARCH).contains(&max) {
            return Err(Error::InvalidParameter(format!(
                "Invalid value for request parameter max_results. It must be at most \
                 {MAX_MODELS_SEARCH}, but got value {max}"
            )));
        }
        let offset = decode_page_token(page_token.as_deref())?;
        let q = search::registered_models(filter.as_deref(), &order_by)?;
        self.db()
            .read(move |c| -> Result<_> {
                let mut params = q.params.clone();
                params.push(Value::Int(max + 1));
                params.push(Value::Int(offset));
                let n = q.params.len();
                let sql = format!(
                    "SELECT rm.id, rm.name, rm.creation_time, rm.last_updated_time, \
                     rm.description FROM registered_models rm WHERE {} ORDER BY {} \
                     LIMIT ?{} OFFSET ?{}",
                    q.where_sql,
                    q.order_sql,
                    n + 1,
                    n + 2
                );
                let mut items = sql::load_models_by_query(c, &sql, &params)?;
                let more = items.len() as i64 > max;
                items.truncate(max as usize);
                Ok(Page {
                    items,
                    next_page_token: more.then(|| encode_page_token(offset + max)),
                })
            })
            .await
    }

    /// Sets a registered model tag.
    pub async fn set_registered_model_tag(&self, name: String, tag: KeyValue) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        v::validate_tag(&tag.key, &tag.value)?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                c.execute(
                    "INSERT INTO registered_model_tags (model, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model, key) DO UPDATE SET value = excluded.value",
                    &[row.key.into(), (&tag.key).into(), (&tag.value).into()],
                )?;
                sql::record_event(
                    c,
                    now,
                    "registered_model_tag.set",
                    &name,
                    None,
                    &json!({"name": name, "key": tag.key, "value": tag.value}),
                )
            })
            .await?;
        self.published(Some(seq));
        Ok(())
    }

    /// Deletes a registered model tag (absent tags are fine, as in MLflow).
    pub async fn delete_registered_model_tag(&self, name: String, key: String) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                let n = c.execute(
                    "DELETE FROM registered_model_tags WHERE model = ?1 AND key = ?2",
                    &[row.key.into(), (&key).into()],
                )?;
                if n == 0 {
                    return Ok(None);
                }
                sql::record_event(
                    c,
                    now,
                    "registered_model_tag.deleted",
                    &name,
                    None,
                    &json!({"name": name, "key": key}),
                )
                .map(Some)
            })
            .await?;
        self.published(seq);
        Ok(())
    }

    /// Every recorded change of one live version, oldest first (survives renames).
    pub async fn version_history(&self, name: String, version: i64) -> Result<Vec<RegistryEvent>> {
        self.db()
            .read(move |c| -> Result<_> {
                let (_, key) = sql::get_version(c, &name, version)?;
                sql::events_after(c, 0, i64::MAX, sql::EventScope::Version(key, version))
            })
            .await
    }

    /// Events after `after` (oldest first, at most `limit`), optionally for one model. When
    /// there are none yet, waits up to `wait` for one to be committed (long-poll).
    pub async fn events(
        &self,
        after: i64,
        limit: i64,
        name: Option<String>,
        wait: Duration,
    ) -> Result<(Vec<RegistryEvent>, i64)> {
        let limit = limit.clamp(1, 10_000);
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            let n = name.clone();
            let (events, last) = self
                .db()
                .read(move |c| -> Result<_> {
                    let scope = match n.as_deref() {
                        Some(name) => sql::EventScope::Model(name),
                        None => sql::EventScope::All,
                    };
                    let events = sql::events_after(c, after, limit, scope)?;
                    let last = sql::last_seq(c)?;
                    Ok::<_, Error>((events, last))
                })
                .await?;
            if !events.is_empty() {
                return Ok((events, last));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok((events, last));
            }
            // Wake on a commit in this process, and re-check at least every second in case
            // another process shares the database.
            let slice = (deadline - now).min(Duration::from_secs(1));
            let _ = tokio::time::timeout(slice, rx.changed()).await;
        }
    }
}
