//! Model versions and aliases: create (with the source checks), get, update, stage transitions,
//! delete, download URI, search, tags, aliases and the latest versions per stage.

use super::*;

/// The sources MLflow's client gives prompt versions (the template is in the tags).
const PROMPT_SOURCES: &[&str] = &["dummy-source", "prompt-template"];

impl RegistryService {
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
                "Invalid model version source: '{source}'. If supplying a source as an http, \
                 https, local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute \
                 path must be provided without relative path references present. Please provide \
                 an absolute path."
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
                match &run_id {
                    Some(r) if r != &src_run => return Err(source_error("run_id")),
                    // The run id given and the source agree: accepted as `mlflow server`
                    // accepts it, without looking the run up (it may live in another
                    // tracking server, or be created later; MLflow's own registry tests
                    // register such sources).
                    Some(_) => {}
                    // No run id given (MLflow refuses that): the source must name a run here.
                    None => {
                        tracking
                            .get_run(src_run.clone())
                            .await
                            .map_err(|_| source_error("run_id"))?;
                    }
                }
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
                "Invalid model version source: '{source}'. To use a local path as a model \
                 version source, the run_id request parameter has to be specified and the local \
                 path has to be contained within the artifact directory of the run specified by \
                 the run_id. This server keeps every run's artifacts behind its artifact proxy \
                 (mlflow-artifacts:/), so register runs:/<run_id>/<path> or models:/<model_id> \
                 instead."
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

    /// Creates the next version of a registered model; a prompt version (tagged
    /// `mlflow.prompt.is_prompt`) keeps its placeholder source and needs its template tag.
    pub async fn create_model_version(&self, req: NewModelVersion) -> Result<ModelVersion> {
        v::validate_model_name(&req.name, "name")?;
        for t in &req.tags {
            v::validate_tag(&t.key, &t.value)?;
        }
        let run_id = req.run_id.clone().filter(|s| !s.is_empty());
        let model_id = req.model_id.clone().filter(|s| !s.is_empty());
        let is_prompt = req
            .tags
            .iter()
            .any(|t| t.key == crate::PROMPT_TAG && t.value.eq_ignore_ascii_case("true"));
        let (source, storage, run_id, model_id) = if is_prompt {
            // A prompt version's text lives in its tags; its source is the client's
            // placeholder, and nothing else (as `mlflow server` checks it).
            if !PROMPT_SOURCES.contains(&req.source.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "Invalid prompt source: '{}'. A prompt version's source must be one of {}.",
                    req.source,
                    PROMPT_SOURCES.join(", ")
                )));
            }
            if !req.tags.iter().any(|t| t.key == crate::PROMPT_TEXT_TAG) {
                return Err(Error::InvalidParameter(format!(
                    "A prompt version needs its template in the tag '{}'.",
                    crate::PROMPT_TEXT_TAG
                )));
            }
            (req.source.clone(), req.source.clone(), run_id, model_id)
        } else {
            self.resolve_source(&req.source, run_id, model_id).await?
        };
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
            // Python's json.dumps layout, as mlflow server writes it: the client appends to
            // this text and tools compare it.
            value: loopml_tracking::pyjson::dumps(&serde_json::Value::Array(list)),
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
}
