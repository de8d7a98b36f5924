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

    /// The latest version in each requested stage (all stages when none are given).
    pub async fn get_latest_versions(
        &self,
        name: String,
        stages: Vec<String>,
    ) -> Result<Vec<ModelVersion>> {
        v::validate_model_name(&name, "name")?;
        let wanted: Vec<Stage> = stages
            .iter()
            .map(|s| {
                Stage::parse(s).ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "Invalid Model Version stage: {s}. Value must be one of None, Staging, \
                         Production, Archived."
                    ))
                })
            })
            .collect::<Result<_>>()?;
        self.db()
            .read(move |c| -> Result<_> {
                let row = sql::model_row(c, &name)?;
                let mut latest = sql::latest_versions(c, row.key)?;
                if !wanted.is_empty() {
                    latest.retain(|mv| wanted.contains(&mv.current_stage));
                }
                Ok(latest)
            })
            .await
    }

    // ------------------------------------------------------------ model versions

    /// Works out (source, storage location, run id, model id) for a new version and checks that
    /// the source really belongs to the run or logged model given, as MLflow's server does.
    async fn resolve_source(
        &self,
        source: &str,
        run_id: Option<String>,
        model_id: Option<String>,
    ) -> Result<(String, String, Option<String>, Option<String>)> {
        let tracking = self.tracking();
        let source_error = |what: &str| {
            Error::InvalidParameter(format!(
                "Invalid model version source: '{source}'. The {what} request parameter must \
                 identify the resource that contains the source."
            ))
        };
        if source.trim().is_empty() {
            return Err(Error::missing("source"));
        }
        if has_relative_parts(source) {
            return Err(Error::InvalidParameter(format!(
                "Invalid model version source: '{source}'. Relative paths ('..') are not \
                 allowed."
            )));
        }
        let scheme = source
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .filter(|s| s.len() > 1 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        match scheme.as_deref() {
            Some("models") => match parse_models_uri(source)? {
                ModelsUri::LoggedModel(id) => {
                    if let Some(given) = &model_id
                        && given != &id
                    {
                        return Err(source_error("model_id"));
                    }
                    let lm = tracking
                        .get_logged_model(id.clone(), false)
                        .await
                        .map_err(|_| source_error("model_id"))?;
                    let run = run_id.or(lm.source_run_id.clone());
                    Ok((source.to_string(), lm.artifact_uri, run, Some(id)))
                }
                ModelsUri::Registered { name, selector } => {
                    let target = self.resolve_selector(&name, &selector).await?;
                    if target.tags.iter().any(|t| t.key == crate::PROMPT_TAG) {
                        return Err(Error::InvalidParameter(format!(
                            "Invalid model version source: '{source}'. Prompt versions cannot \
                             be used as model version sources."
                        )));
                    }
                    if run_id
                        .as_ref()
                        .is_some_and(|r| Some(r) != target.run_id.as_ref())
                        || model_id
                            .as_ref()
                            .is_some_and(|m| Some(m) != target.model_id.as_ref())
                    {
                        return Err(Error::InvalidParameter(format!(
                            "Invalid model version source: '{source}'. The run_id and model_id \
                             request parameters must match the referenced model version."
                        )));
                    }
                    Ok((
                        format!("models:/{}/{}", target.name, target.version),
                        target.storage_location,
                        run_id.or(target.run_id),
                        model_id.or(target.model_id),
                    ))
                }
            },
            Some("runs") => {
                let rest = source["runs:".len()..].trim_start_matches('/');
                if source["runs:".len()..].starts_with("//") {
                    return Err(source_error("run_id"));
                }
                let src_run = rest.split('/').next().unwrap_or("").to_string();
                if src_run.is_empty() {
                    return Err(source_error("run_id"));
                }
                if run_id.as_ref().is_some_and(|r| r != &src_run) {
                    return Err(source_error("run_id"));
                }
                tracking
                    .get_run(src_run.clone())
                    .await
                    .map_err(|_| source_error("run_id"))?;
                Ok((
                    source.to_string(),
                    source.to_string(),
                    Some(src_run),
                    model_id,
                ))
            }
            Some("mlflow-artifacts") => {
                if let Some(id) = &model_id {
                    let lm = tracking
                        .get_logged_model(id.clone(), false)
                        .await
                        .map_err(|_| source_error("model_id"))?;
                    if !is_within(source, &lm.artifact_uri) {
                        return Err(source_error("model_id"));
                    }
                    let run = run_id.or(lm.source_run_id);
                    return Ok((source.to_string(), source.to_string(), run, model_id));
                }
                let Some(rid) = &run_id else {
                    return Err(source_error("run_id"));
                };
                let run = tracking
                    .get_run(rid.clone())
                    .await
                    .map_err(|_| source_error("run_id"))?;
                if !is_within(source, &run.info.artifact_uri) {
                    return Err(source_error("run_id"));
                }
                Ok((source.to_string(), source.to_string(), run_id, model_id))
            }
            Some("file") | None => Err(Error::InvalidParameter(format!(
                "Invalid model version source: '{source}'. Local paths cannot be used as model \
                 version sources on this server: log the model to the run (or as a logged \
                 model) and register runs:/<run_id>/<path> or models:/<model_id>."
            ))),
            // Object stores and other remote locations are recorded as given.
            Some(_) => Ok((source.to_string(), source.to_string(), run_id, model_id)),
        }
    }

    /// Resolves `name` plus a version number, stage name, `latest` or `@alias`.
    pub async fn resolve_selector(&self, name: &str, selector: &str) -> Result<ModelVersion> {
        if let Some(alias) = selector.strip_prefix('@') {
            return self
                .get_model_version_by_alias(name.to_string(), alias.to_string())
                .await;
        }
        if let Ok(n) = selector.parse::<i64>() {
            return self.get_model_version(name.to_string(), n).await;
        }
        if selector.eq_ignore_ascii_case("latest") {
            return self
                .get_model_version_by_alias(name.to_string(), "latest".into())
                .await;
        }
        let stage = Stage::parse(selector).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "Invalid model reference '{name}/{selector}': expected a version number, a \
                 stage (None, Staging, Production, Archived), 'latest' or '@alias'."
            ))
        })?;
        let mut latest = self
            .get_latest_versions(name.to_string(), vec![stage.as_str().to_string()])
            .await?;
        latest.pop().ok_or_else(|| {
            Error::NotFound(format!(
                "No model version of '{name}' is in stage '{}'.",
                stage.as_str()
            ))
        })
    }

    /// Resolves a `models:/name/<version|stage|latest>` or `models:/name@alias` URI.
    pub async fn resolve_uri(&self, uri: &str) -> Result<ModelVersion> {
        match parse_models_uri(uri)? {
            ModelsUri::Registered { name, selector } => {
                self.resolve_selector(&name, &selector).await
            }
            ModelsUri::LoggedModel(id) => Err(Error::InvalidParameter(format!(
                "'{uri}' names a logged model ({id}), not a registered model version; use \
                 models:/<name>/<version> or models:/<name>@<alias>."
            ))),
        }
    }

    /// Creates the next version of a registered model.
    pub async fn create_model_version(&self, req: NewModelVersion) -> Result<ModelVersion> {
        v::validate_model_name(&req.name, "name")?;
        for t in &req.tags {
            v::validate_tag(&t.key, &t.value)?;
        }
        let run_id = req.run_id.clone().filter(|s| !s.is_empty());
        let model_id = req.model_id.clone().filter(|s| !s.is_empty());
        let (source, storage, run_id, model_id) =
            self.resolve_source(&req.source, run_id, model_id).await?;
        let name = req.name.clone();
        let (mv, seq) = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                let version = c
                    .query_opt(
                        "UPDATE registered_models SET next_version = next_version + 1, \
                         last_updated_time = ?2 WHERE id = ?1 RETURNING next_version - 1",
                        &[row.key.into(), now.into()],
                        |r| r.i64(0),
                    )?
                    .ok_or_else(|| Error::NotFound(name.clone()))?;
                c.execute(
                    "INSERT INTO model_versions (model, version, creation_time, \
                     last_updated_time, description, stage, source, storage_location, run_id, \
                     run_link, model_id, status) \
                     VALUES (?1, ?2, ?3, ?3, ?4, 'None', ?5, ?6, ?7, ?8, ?9, 'READY')",
                    &[
                        row.key.into(),
                        version.into(),
                        now.into(),
                        req.description.as_ref().filter(|d| !d.is_empty()).into(),
                        (&source).into(),
                        (&storage).into(),
                        run_id.as_ref().into(),
                        req.run_link.as_ref().filter(|d| !d.is_empty()).into(),
                        model_id.as_ref().into(),
                    ],
                )?;
                for t in &req.tags {
                    c.execute(
                        "INSERT INTO model_version_tags (model, version, key, value) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model, version, key) \
                         DO UPDATE SET value = excluded.value",
                        &[
                            row.key.into(),
                            version.into(),
                            (&t.key).into(),
                            (&t.value).into(),
                        ],
                    )?;
                }
                let (mv, _) = sql::get_version(c, &name, version)?;
                let seq = sql::record_event(
                    c,
                    now,
                    "model_version.created",
                    &name,
                    Some(version),
                    &model_version_payload(&mv),
                )?;
                Ok((mv, seq))
            })
            .await?;
        self.published(Some(seq));
        if let Some(model_id) = &mv.model_id {
            self.tag_logged_model_versions(model_id, &mv.name, mv.version)
                .await;
        }
        Ok(mv)
    }

    /// Appends `{name, version}` to the logged model's `mlflow.modelVersions` tag, as MLflow's
    /// server does. Best effort: the version is already registered.
    async fn tag_logged_model_versions(&self, model_id: &str, name: &str, version: i64) {
        const TAG: &str = "mlflow.modelVersions";
        let tracking = self.tracking();
        let Ok(lm) = tracking.get_logged_model(model_id.to_string(), false).await else {
            return;
        };
        let entry = json!({"name": name, "version": version});
        let mut list: Vec<serde_json::Value> = lm
            .tags
            .iter()
            .find(|t| t.key == TAG)
            .and_then(|t| serde_json::from_str(&t.value).ok())
            .unwrap_or_default();
        if list.contains(&entry) {
            return;
        }
        list.push(entry);
        let tag = KeyValue {
            key: TAG.into(),
            value: serde_json::Value::Array(list).to_string(),
        };
        if let Err(e) = tracking
            .set_logged_model_kvs(model_id.to_string(), vec![tag], vec![])
            .await
        {
            tracing::warn!(model_id, error = %e, "could not tag the logged model with its versions");
        }
    }

    /// Gets a model version.
    pub async fn get_model_version(&self, name: String, version: i64) -> Result<ModelVersion> {
        v::validate_model_name(&name, "name")?;
        self.db()
            .read(move |c| sql::get_version(c, &name, version).map(|(mv, _)| mv))
            .await
    }

    /// Sets a version's description.
    pub async fn update_model_version(
        &self,
        name: String,
        version: i64,
        description: Option<String>,
    ) -> Result<ModelVersion> {
        v::validate_model_name(&name, "name")?;
        let (mv, seq) = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let (_, key) = sql::get_version(c, &name, version)?;
                c.execute(
                    "UPDATE model_versions SET description = ?3, last_updated_time = ?4 \
                     WHERE model = ?1 AND version = ?2",
                    &[
                        key.into(),
                        version.into(),
                        description.as_ref().into(),
                        now.into(),
                    ],
                )?;
                let seq = sql::record_event(
                    c,
                    now,
                    "model_version.updated",
                    &name,
                    Some(version),
                    &json!({"name": name, "version": version.to_string(), "description": description}),
                )?;
                Ok((sql::get_version(c, &name, version)?.0, seq))
            })
            .await?;
        self.published(Some(seq));
        Ok(mv)
    }

    /// Moves a version to a stage, optionally archiving the others in that stage.
    pub async fn transition_stage(
        &self,
        name: String,
        version: i64,
        stage: String,
        archive_existing_versions: bool,
    ) -> Result<ModelVersion> {
        v::validate_model_name(&name, "name")?;
        let target = Stage::parse(&stage).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "Invalid Model Version stage: {stage}. Value must be one of None, Staging, \
                 Production, Archived."
            ))
        })?;
        if archive_existing_versions && !target.is_active() {
            return Err(Error::InvalidParameter(format!(
                "Model version transition cannot archive existing model versions because \
                 '{stage}' is not an Active stage. Valid stages are ['Staging', 'Production']"
            )));
        }
        let (mv, seq) = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let (before, key) = sql::get_version(c, &name, version)?;
                let mut seq = 0;
                if archive_existing_versions {
                    let others = c.query(
                        "SELECT version FROM model_versions WHERE model = ?1 AND stage = ?2 \
                         AND version != ?3 ORDER BY version",
                        &[key.into(), target.as_str().into(), version.into()],
                        |r| r.i64(0),
                    )?;
                    for other in others {
                        c.execute(
                            "UPDATE model_versions SET stage = 'Archived', last_updated_time = ?3 \
                             WHERE model = ?1 AND version = ?2",
                            &[key.into(), other.into(), now.into()],
                        )?;
                        seq = sql::record_event(
                            c,
                            now,
                            "model_version.stage_transitioned",
                            &name,
                            Some(other),
                            &json!({"name": name, "version": other.to_string(),
                                    "from_stage": target.as_str(), "to_stage": "Archived",
                                    "archived_by_version": version.to_string()}),
                        )?;
                    }
                }
                c.execute(
                    "UPDATE model_versions SET stage = ?3, last_updated_time = ?4 \
                     WHERE model = ?1 AND version = ?2",
                    &[
                        key.into(),
                        version.into(),
                        target.as_str().into(),
                        now.into(),
                    ],
                )?;
                sql::touch_model(c, key, now)?;
                seq = seq.max(sql::record_event(
                    c,
                    now,
                    "model_version.stage_transitioned",
                    &name,
                    Some(version),
                    &json!({"name": name, "version": version.to_string(),
                            "from_stage": before.current_stage.as_str(),
                            "to_stage": target.as_str(),
                            "archive_existing_versions": archive_existing_versions}),
                )?);
                Ok((sql::get_version(c, &name, version)?.0, seq))
            })
            .await?;
        self.published(Some(seq));
        Ok(mv)
    }

    /// Deletes a version (and the aliases pointing at it). Its number is never reused.
    pub async fn delete_model_version(&self, name: String, version: i64) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let (mv, key) = sql::get_version(c, &name, version)?;
                let mut seq = 0;
                for alias in &mv.aliases {
                    seq = sql::record_event(
                        c,
                        now,
                        "model_version_alias.deleted",
                        &name,
                        Some(version),
                        &json!({"name": name, "alias": alias, "version": version.to_string(),
                                "reason": "model version deleted"}),
                    )?;
                }
                for table in [
                    "registered_model_aliases",
                    "model_version_tags",
                    "model_versions",
                ] {
                    c.execute(
                        &format!("DELETE FROM {table} WHERE model = ?1 AND version = ?2"),
                        &[key.into(), version.into()],
                    )?;
                }
                sql::touch_model(c, key, now)?;
                seq = seq.max(sql::record_event(
                    c,
                    now,
                    "model_version.deleted",
                    &name,
                    Some(version),
                    &json!({"name": name, "version": version.to_string(),
                            "source": mv.source, "run_id": mv.run_id}),
                )?);
                Ok(seq)
            })
            .await?;
        self.published(Some(seq));
        Ok(())
    }

    /// Where a version's artifacts can be downloaded from.
    pub async fn get_download_uri(&self, name: String, version: i64) -> Result<String> {
        Ok(self
            .get_model_version(name, version)
            .await?
            .storage_location)
    }

    /// Searches model versions with MLflow's filter grammar.
    pub async fn search_model_versions(
        &self,
        filter: Option<String>,
        max_results: Option<i64>,
        order_by: Vec<String>,
        page_token: Option<String>,
    ) -> Result<Page<ModelVersion>> {
        let max = max_results.unwrap_or(10_000);
        if max < 1 {
            return Err(Error::InvalidParameter(format!(
                "Invalid value for max_results. It must be a positive integer, but got {max}"
            )));
        }
        if max > MAX_VERSIONS_SEARCH {
            return Err(Error::InvalidParameter(format!(
                "Invalid value for request parameter max_results. It must be at most \
                 {MAX_VERSIONS_SEARCH}, but got value {max}"
            )));
        }
        let offset = decode_page_token(page_token.as_deref())?;
        let q = search::model_versions(filter.as_deref(), &order_by)?;
        self.db()
            .read(move |c| -> Result<_> {
                let mut params = q.params.clone();
                params.push(Value::Int(max + 1));
                params.push(Value::Int(offset));
                let n = q.params.len();
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM model_versions mv \
                     JOIN registered_models rm ON rm.id = mv.model WHERE {} ORDER BY {} \
                     LIMIT ?{} OFFSET ?{}",
                    q.where_sql,
                    q.order_sql,
                    n + 1,
                    n + 2
                );
                let mut items = sql::query_versions(c, &sql, &params)?;
                let more = items.len() as i64 > max;
                items.truncate(max as usize);
                Ok(Page {
                    items,
                    next_page_token: more.then(|| encode_page_token(offset + max)),
                })
            })
            .await
    }

    /// Sets a version tag.
    pub async fn set_model_version_tag(
        &self,
        name: String,
        version: i64,
        tag: KeyValue,
    ) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        v::validate_tag(&tag.key, &tag.value)?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let (_, key) = sql::get_version(c, &name, version)?;
                c.execute(
                    "INSERT INTO model_version_tags (model, version, key, value) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model, version, key) \
                     DO UPDATE SET value = excluded.value",
                    &[
                        key.into(),
                        version.into(),
                        (&tag.key).into(),
                        (&tag.value).into(),
                    ],
                )?;
                sql::record_event(
                    c,
                    now,
                    "model_version_tag.set",
                    &name,
                    Some(version),
                    &json!({"name": name, "version": version.to_string(),
                            "key": tag.key, "value": tag.value}),
                )
            })
            .await?;
        self.published(Some(seq));
        Ok(())
    }

    /// Deletes a version tag (absent tags are fine).
    pub async fn delete_model_version_tag(
        &self,
        name: String,
        version: i64,
        key_name: String,
    ) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let (_, key) = sql::get_version(c, &name, version)?;
                let n = c.execute(
                    "DELETE FROM model_version_tags WHERE model = ?1 AND version = ?2 AND key = ?3",
                    &[key.into(), version.into(), (&key_name).into()],
                )?;
                if n == 0 {
                    return Ok(None);
                }
                sql::record_event(
                    c,
                    now,
                    "model_version_tag.deleted",
                    &name,
                    Some(version),
                    &json!({"name": name, "version": version.to_string(), "key": key_name}),
                )
                .map(Some)
            })
            .await?;
        self.published(seq);
        Ok(())
    }

    // ------------------------------------------------------------ aliases

    /// Points an alias at a version (moving it if it exists).
    pub async fn set_alias(&self, name: String, alias: String, version: i64) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        v::validate_alias(&alias)?;
        v::validate_alias_not_reserved(&alias)?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let (_, key) = sql::get_version(c, &name, version)?;
                let previous = c.query_opt(
                    "SELECT version FROM registered_model_aliases WHERE model = ?1 AND alias = ?2",
                    &[key.into(), (&alias).into()],
                    |r| r.i64(0),
                )?;
                if previous == Some(version) {
                    return Ok(None);
                }
                c.execute(
                    "INSERT INTO registered_model_aliases (model, alias, version) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (model, alias) \
                     DO UPDATE SET version = excluded.version",
                    &[key.into(), (&alias).into(), version.into()],
                )?;
                sql::touch_model(c, key, now)?;
                sql::record_event(
                    c,
                    now,
                    "model_version_alias.created",
                    &name,
                    Some(version),
                    &json!({"name": name, "alias": alias, "version": version.to_string(),
                            "previous_version": previous.map(|p| p.to_string())}),
                )
                .map(Some)
            })
            .await?;
        self.published(seq);
        Ok(())
    }

    /// Removes an alias (absent aliases are fine, as in MLflow).
    pub async fn delete_alias(&self, name: String, alias: String) -> Result<()> {
        v::validate_model_name(&name, "name")?;
        v::validate_alias(&alias)?;
        let seq = self
            .db()
            .write(move |c| -> Result<_> {
                let now = now_ms();
                let row = sql::model_row(c, &name)?;
                let previous = c.query_opt(
                    "DELETE FROM registered_model_aliases WHERE model = ?1 AND alias = ?2 \
                     RETURNING version",
                    &[row.key.into(), (&alias).into()],
                    |r| r.i64(0),
                )?;
                let Some(previous) = previous else {
                    return Ok(None);
                };
                sql::touch_model(c, row.key, now)?;
                sql::record_event(
                    c,
                    now,
                    "model_version_alias.deleted",
                    &name,
                    Some(previous),
                    &json!({"name": name, "alias": alias, "version": previous.to_string()}),
                )
                .map(Some)
            })
            .await?;
        self.published(seq);
        Ok(())
    }

    /// The version an alias points at; `latest` is the highest live version.
    pub async fn get_model_version_by_alias(
        &self,
        name: String,
        alias: String,
    ) -> Result<ModelVersion> {
        v::validate_model_name(&name, "name")?;
        v::validate_alias(&alias)?;
        self.db()
            .read(move |c| -> Result<_> {
                let row = sql::model_row(c, &name)?;
                let version = if alias.eq_ignore_ascii_case("latest") {
                    c.query_opt(
                        "SELECT MAX(version) FROM model_versions WHERE model = ?1",
                        &[row.key.into()],
                        |r| r.opt_i64(0),
                    )?
                    .flatten()
                    .ok_or_else(|| {
                        Error::NotFound(format!("Latest version not found for model {name}."))
                    })?
                } else {
                    c.query_opt(
                        "SELECT version FROM registered_model_aliases WHERE model = ?1 AND alias = ?2",
                        &[row.key.into(), (&alias).into()],
                        |r| r.i64(0),
                    )?
                    .ok_or_else(|| {
                        Error::InvalidParameter(format!(
                            "Registered model alias {alias} not found."
                        ))
                    })?
                };
                sql::get_version(c, &name, version).map(|(mv, _)| mv)
            })
            .await
    }

    // ------------------------------------------------------------ change feed

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
