//! Experiments: create, get (by id or name), search, rename, delete/restore, tags.

use super::*;

impl TrackingService {
    /// Creates an experiment; returns its id.
    pub async fn create_experiment(
        &self,
        name: String,
        artifact_location: Option<String>,
        tags: Vec<KeyValue>,
    ) -> Result<i64> {
        v::validate_experiment_name(&name)?;
        if let Some(l) = artifact_location
            .as_deref()
            .filter(|l| !l.trim().is_empty())
        {
            v::validate_artifact_location(l)?;
        }
        for t in &tags {
            validate_experiment_tag(t)?;
        }
        self.db
            .write(move |c| {
                if sql::experiment_by_name(c, &name)?.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "Experiment(name={name}) already exists. Error: an experiment with this \
                         name exists (deleted experiments keep their names until purged)."
                    )));
                }
                // The id comes from the database (SQLite's rowid, a PostgreSQL identity), not
                // from MAX()+1, which two writers on PostgreSQL would both compute.
                let now = now_ms();
                let location = artifact_location
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| artifact_base(&l));
                let id = c
                    .query_opt(
                        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, \
                         creation_time, last_update_time) VALUES (?, ?, 'active', ?, ?) \
                         RETURNING experiment_id",
                        &[
                            (&name).into(),
                            location.as_deref().unwrap_or("").into(),
                            now.into(),
                            now.into(),
                        ],
                        |r| r.i64(0),
                    )?
                    .ok_or_else(|| StoreError::Worker("INSERT … RETURNING gave no row".into()))?;
                if location.is_none() {
                    c.execute(
                        "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                        &[format!("mlflow-artifacts:/{id}").into(), id.into()],
                    )?;
                }
                for t in &tags {
                    c.execute(
                        "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?) \
                         ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                        &[id.into(), (&t.key).into(), (&t.value).into()],
                    )?;
                }
                Ok(id)
            })
            .await
    }

    /// Gets an experiment by id.
    pub async fn get_experiment(&self, id: i64) -> Result<Experiment> {
        self.db.read(move |c| sql::require_experiment(c, id)).await
    }

    /// Gets an experiment by name.
    pub async fn get_experiment_by_name(&self, name: String) -> Result<Experiment> {
        self.db
            .read(move |c| {
                sql::experiment_by_name(c, &name)?.ok_or_else(|| {
                    Error::NotFound(format!("Could not find experiment with name '{name}'"))
                })
            })
            .await
    }

    /// Searches experiments; with `readable`, only those the caller may read (in SQL, so
    /// pages stay full).
    pub async fn search_experiments(
        &self,
        filter: Option<String>,
        order_by: Vec<String>,
        max_results: Option<i64>,
        page_token: Option<String>,
        view: ViewType,
        readable: Option<loopml_store::Readable>,
    ) -> Result<Page<Experiment>> {
        let max = check_max_results(
            max_results,
            1000,
            v::MAX_EXPERIMENTS_SEARCH,
            "experiment searches",
        )?;
        let mut clauses = parse_filter(filter.as_deref().unwrap_or(""))?;
        match readable {
            Some(loopml_store::Readable::Only(ids)) if ids.is_empty() => {
                return Ok(Page {
                    items: Vec::new(),
                    next_page_token: None,
                });
            }
            Some(loopml_store::Readable::Only(ids)) => {
                clauses.push(id_clause(crate::filter::Op::In, ids));
            }
            Some(loopml_store::Readable::AllBut(ids)) if !ids.is_empty() => {
                clauses.push(id_clause(crate::filter::Op::NotIn, ids));
            }
            _ => {}
        }
        let order = order_by
            .iter()
            .map(|o| parse_order_by(o))
            .collect::<Result<Vec<_>>>()?;
        let offset = decode_page_token(page_token.as_deref())?;
        let (q, params) =
            sql::search_experiments_sql(&clauses, &order, view.stages(), max + 1, offset)?;
        self.db
            .read(move |c| {
                let mut ids = c.query(&q, &params, |r| r.i64(0))?;
                let more = ids.len() as i64 > max;
                ids.truncate(max as usize);
                let items = sql::experiments_by_ids(c, &ids)?;
                Ok(Page {
                    items,
                    next_page_token: more.then(|| encode_page_token(offset + max)),
                })
            })
            .await
    }

    /// Renames an experiment.
    pub async fn rename_experiment(&self, id: i64, new_name: String) -> Result<()> {
        v::validate_experiment_name(&new_name)?;
        self.db
            .write(move |c| {
                let e = sql::require_experiment(c, id)?;
                if e.lifecycle_stage != LifecycleStage::Active {
                    return Err(Error::InvalidState(
                        "Cannot rename a non-active experiment.".into(),
                    ));
                }
                if let Some(other) = sql::experiment_by_name(c, &new_name)?
                    && other.id != id
                {
                    return Err(Error::AlreadyExists(format!(
                        "Experiment(name={new_name}) already exists."
                    )));
                }
                c.execute(
                    "UPDATE experiments SET name = ?, last_update_time = ? WHERE experiment_id = ?",
                    &[(&new_name).into(), now_ms().into(), id.into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Soft-deletes (or restores) an experiment and its runs.
    pub async fn set_experiment_lifecycle(&self, id: i64, stage: LifecycleStage) -> Result<()> {
        self.db
            .write(move |c| {
                let e = sql::require_experiment(c, id)?;
                if stage == LifecycleStage::Active && e.lifecycle_stage == LifecycleStage::Active {
                    return Err(Error::InvalidParameter(format!(
                        "Cannot restore an active experiment ({id})."
                    )));
                }
                if stage == LifecycleStage::Deleted && e.lifecycle_stage == LifecycleStage::Deleted
                {
                    return Err(Error::InvalidParameter(format!(
                        "Experiment {id} is already deleted."
                    )));
                }
                let now = now_ms();
                c.execute(
                    "UPDATE experiments SET lifecycle_stage = ?, last_update_time = ? \
                     WHERE experiment_id = ?",
                    &[stage.as_str().into(), now.into(), id.into()],
                )?;
                let deleted_time: Value<'_> = if stage == LifecycleStage::Deleted {
                    now.into()
                } else {
                    Value::Null
                };
                c.execute(
                    "UPDATE runs SET lifecycle_stage = ?, deleted_time = ? WHERE experiment_id = ?",
                    &[stage.as_str().into(), deleted_time, id.into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Sets an experiment tag.
    pub async fn set_experiment_tag(&self, id: i64, tag: KeyValue) -> Result<()> {
        validate_experiment_tag(&tag)?;
        self.db
            .write(move |c| {
                let e = sql::require_experiment(c, id)?;
                if e.lifecycle_stage != LifecycleStage::Active {
                    return Err(Error::InvalidParameter(format!(
                        "The experiment {id} must be in the 'active' state. Current state is \
                         deleted."
                    )));
                }
                c.execute(
                    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?) \
                     ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                    &[id.into(), (&tag.key).into(), (&tag.value).into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Deletes an experiment tag.
    pub async fn delete_experiment_tag(&self, id: i64, key: String) -> Result<()> {
        self.db
            .write(move |c| {
                sql::require_experiment(c, id)?;
                let n = c.execute(
                    "DELETE FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                    &[id.into(), (&key).into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound(format!(
                        "No tag with name: {key} in experiment with id {id}"
                    )));
                }
                Ok(())
            })
            .await
    }

    // ---------------------------------------------------------------- runs
}

/// `experiment_id IN / NOT IN (ids)`, as a parsed filter clause.
fn id_clause(op: crate::filter::Op, ids: Vec<String>) -> crate::filter::Clause {
    crate::filter::Clause {
        entity: crate::filter::Entity::Attribute("experiment_id".into()),
        op,
        value: crate::filter::Literal::List(ids),
    }
}
