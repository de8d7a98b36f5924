//! Run inputs and outputs (datasets, logged models linked to runs) and logged models: create,
//! get, finalize, delete, tags and params, search.

use super::*;

impl TrackingService {
    /// Records datasets (and models) a run used.
    pub async fn log_inputs(
        &self,
        run_id: String,
        datasets: Vec<NewDatasetInput>,
        models: Vec<String>,
    ) -> Result<()> {
        v::validate_run_id(&run_id)?;
        for d in &datasets {
            validate_dataset(d)?;
        }
        self.db
            .write(move |c| {
                let info = sql::require_active_run(c, &run_id)?;
                for d in &datasets {
                    let ds = &d.dataset;
                    let existing = c.query_opt(
                        "SELECT dataset_uuid FROM datasets WHERE experiment_id = ? AND name = ? \
                         AND digest = ?",
                        &[info.experiment_id.into(), (&ds.name).into(), (&ds.digest).into()],
                        |r| r.string(0),
                    )?;
                    let ds_id = match existing {
                        Some(id) => id,
                        None => {
                            let id = new_id();
                            c.execute(
                                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, \
                                 source_type, source, schema, profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                &[
                                    (&id).into(),
                                    info.experiment_id.into(),
                                    (&ds.name).into(),
                                    (&ds.digest).into(),
                                    (&ds.source_type).into(),
                                    (&ds.source).into(),
                                    ds.schema.as_deref().into(),
                                    ds.profile.as_deref().into(),
                                ],
                            )?;
                            id
                        }
                    };
                    c.execute(
                        "INSERT INTO run_dataset_inputs (run_uuid, dataset_uuid) VALUES (?, ?) \
                         ON CONFLICT DO NOTHING",
                        &[(&run_id).into(), (&ds_id).into()],
                    )?;
                    for t in &d.tags {
                        c.execute(
                            "INSERT INTO run_dataset_input_tags (run_uuid, dataset_uuid, key, value) \
                             VALUES (?, ?, ?, ?) ON CONFLICT (run_uuid, dataset_uuid, key) \
                             DO UPDATE SET value = excluded.value",
                            &[(&run_id).into(), (&ds_id).into(), (&t.key).into(), (&t.value).into()],
                        )?;
                    }
                }
                for m in &models {
                    c.execute(
                        "INSERT INTO run_model_inputs (run_uuid, model_id) VALUES (?, ?) \
                         ON CONFLICT DO NOTHING",
                        &[(&run_id).into(), m.into()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Records logged models a run produced.
    pub async fn log_outputs(&self, run_id: String, models: Vec<(String, i64)>) -> Result<()> {
        v::validate_run_id(&run_id)?;
        self.db
            .write(move |c| {
                sql::require_active_run(c, &run_id)?;
                for (m, step) in &models {
                    sql::require_model(c, m, false)?;
                    c.execute(
                        "INSERT INTO run_model_outputs (run_uuid, model_id, step) VALUES (?, ?, ?) \
                         ON CONFLICT (run_uuid, model_id) DO UPDATE SET step = excluded.step",
                        &[(&run_id).into(), m.into(), (*step).into()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    // ---------------------------------------------------------------- logged models

    /// Creates a logged model in PENDING state.
    pub async fn create_logged_model(
        &self,
        experiment_id: i64,
        name: Option<String>,
        model_type: Option<String>,
        source_run_id: Option<String>,
        params: Vec<KeyValue>,
        tags: Vec<KeyValue>,
    ) -> Result<LoggedModel> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                if let Some(bad) = n
                    .chars()
                    .find(|c| matches!(c, '/' | ':' | '.' | '%' | '"' | '\''))
                {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid model name '{n}': names cannot contain '{bad}' (the characters \
                         / : . % \" ' are not allowed)."
                    )));
                }
                n
            }
            None => crate::names::random_name(),
        };
        for p in &params {
            v::validate_key(&p.key, "key")?;
        }
        for t in &tags {
            v::validate_key(&t.key, "key")?;
        }
        if let Some(r) = &source_run_id {
            v::validate_run_id(r)?;
        }
        let model_id = format!("m-{}", new_id());
        let mid = model_id.clone();
        self.db
            .write(move |c| {
                let e = sql::require_experiment(c, experiment_id)?;
                if e.lifecycle_stage != LifecycleStage::Active {
                    return Err(Error::InvalidParameter(format!(
                        "The experiment {experiment_id} must be in the 'active' state."
                    )));
                }
                // The source run is recorded as given, not looked up: `mlflow server` accepts a
                // run it does not hold (one on another tracking server, or logged later).
                let uri = format!("{}/models/{mid}/artifacts", artifact_base(&e.artifact_location));
                let now = now_ms();
                c.execute(
                    "INSERT INTO logged_models (model_id, experiment_id, name, artifact_uri, status, \
                     status_message, model_type, source_run_id, creation_time, last_updated_time, \
                     lifecycle_stage) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, 'active')",
                    &[
                        (&mid).into(),
                        experiment_id.into(),
                        (&name).into(),
                        (&uri).into(),
                        LoggedModelStatus::Pending.as_str().into(),
                        model_type.as_deref().into(),
                        source_run_id.as_deref().into(),
                        now.into(),
                        now.into(),
                    ],
                )?;
                upsert_model_kvs(c, &mid, "logged_model_params", &params)?;
                upsert_model_kvs(c, &mid, "logged_model_tags", &tags)?;
                Ok::<(), Error>(())
            })
            .await?;
        self.get_logged_model(model_id, false).await
    }

    /// Gets a logged model.
    pub async fn get_logged_model(&self, id: String, allow_deleted: bool) -> Result<LoggedModel> {
        self.db
            .read(move |c| sql::require_model(c, &id, allow_deleted))
            .await
    }

    /// Sets a logged model's final status.
    pub async fn finalize_logged_model(
        &self,
        id: String,
        status: LoggedModelStatus,
    ) -> Result<LoggedModel> {
        let mid = id.clone();
        self.db
            .write(move |c| {
                sql::require_model(c, &mid, false)?;
                c.execute(
                    "UPDATE logged_models SET status = ?, last_updated_time = ? WHERE model_id = ?",
                    &[status.as_str().into(), now_ms().into(), (&mid).into()],
                )?;
                Ok::<(), Error>(())
            })
            .await?;
        self.get_logged_model(id, false).await
    }

    /// Soft-deletes a logged model.
    pub async fn delete_logged_model(&self, id: String) -> Result<()> {
        self.db
            .write(move |c| {
                sql::require_model(c, &id, false)?;
                c.execute(
                    "UPDATE logged_models SET lifecycle_stage = 'deleted', last_updated_time = ? \
                     WHERE model_id = ?",
                    &[now_ms().into(), (&id).into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Upserts tags or params of a logged model.
    pub async fn set_logged_model_kvs(
        &self,
        id: String,
        tags: Vec<KeyValue>,
        params: Vec<KeyValue>,
    ) -> Result<()> {
        for kv in tags.iter().chain(&params) {
            v::validate_key(&kv.key, "key")?;
        }
        self.db
            .write(move |c| {
                sql::require_model(c, &id, false)?;
                upsert_model_kvs(c, &id, "logged_model_tags", &tags)?;
                upsert_model_kvs(c, &id, "logged_model_params", &params)?;
                c.execute(
                    "UPDATE logged_models SET last_updated_time = ? WHERE model_id = ?",
                    &[now_ms().into(), (&id).into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Deletes a logged model tag.
    pub async fn delete_logged_model_tag(&self, id: String, key: String) -> Result<()> {
        self.db
            .write(move |c| {
                sql::require_model(c, &id, false)?;
                let n = c.execute(
                    "DELETE FROM logged_model_tags WHERE model_id = ? AND key = ?",
                    &[(&id).into(), (&key).into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound(format!(
                        "No tag with key '{key}' found for logged model '{id}'."
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Searches logged models.
    pub async fn search_logged_models(&self, req: ModelSearch) -> Result<Page<LoggedModel>> {
        let max = check_max_results(req.max_results, 100, 10_000, "logged model searches")?;
        let exp_ids = req
            .experiment_ids
            .iter()
            .map(|e| v::parse_experiment_id(e))
            .collect::<Result<Vec<_>>>()?;
        let clauses = parse_filter(&req.filter)?;
        let offset = decode_page_token(req.page_token.as_deref())?;
        if exp_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        }
        let (q, params) = sql::search_models_sql(
            &exp_ids,
            &clauses,
            &req.datasets,
            &req.order_by,
            max + 1,
            offset,
        )?;
        self.db
            .read(move |c| {
                let mut ids = c.query(&q, &params, |r| r.string(0))?;
                let more = ids.len() as i64 > max;
                ids.truncate(max as usize);
                Ok(Page {
                    items: sql::models_by_ids(c, &ids)?,
                    next_page_token: more.then(|| encode_page_token(offset + max)),
                })
            })
            .await
    }
}
