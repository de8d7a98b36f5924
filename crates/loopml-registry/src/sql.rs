//! SQL for the registry tables. Every function takes a connection from the store, so the same
//! code runs inside a write transaction or on a read snapshot. Statements are portable
//! (SQLite and PostgreSQL), with positional parameters.

use std::collections::HashMap;

use loopml_store::{Conn, Row, StoreError, Value};
use loopml_tracking::model::KeyValue;

use crate::error::{Error, Result};
use crate::model::{Alias, ModelVersion, RegisteredModel, RegistryEvent, Stage};

/// Columns of a model version row, in the order [`version_from_row`] reads them.
pub const VERSION_COLUMNS: &str = "rm.name, mv.version, mv.creation_time, mv.last_updated_time, \
     mv.description, mv.user_id, mv.stage, mv.source, mv.storage_location, mv.run_id, \
     mv.run_link, mv.model_id, mv.status, mv.status_message, mv.model";

/// A version row plus the registered model's integer key (to attach tags and aliases).
pub struct VersionRow {
    /// The version, without tags and aliases yet.
    pub version: ModelVersion,
    /// Integer key of the registered model.
    pub model_key: i64,
}

/// Reads a row selected with [`VERSION_COLUMNS`].
pub fn version_from_row(r: &Row<'_>) -> Result<VersionRow, StoreError> {
    let stage_raw = r.string(6)?;
    Ok(VersionRow {
        version: ModelVersion {
            name: r.string(0)?,
            version: r.i64(1)?,
            creation_timestamp: r.i64(2)?,
            last_updated_timestamp: r.i64(3)?,
            description: r.opt_string(4)?,
            user_id: r.opt_string(5)?,
            current_stage: Stage::parse(&stage_raw).unwrap_or(Stage::None),
            source: r.string(7)?,
            storage_location: r.string(8)?,
            run_id: r.opt_string(9)?,
            run_link: r.opt_string(10)?,
            model_id: r.opt_string(11)?,
            status: r.string(12)?,
            status_message: r.opt_string(13)?,
            tags: Vec::new(),
            aliases: Vec::new(),
        },
        model_key: r.i64(14)?,
    })
}

/// The integer key, creation time, update time and description of a registered model.
pub struct ModelRow {
    /// Integer key.
    pub key: i64,
    /// Name.
    pub name: String,
    /// Created, ms.
    pub creation_time: i64,
    /// Last updated, ms.
    pub last_updated_time: i64,
    /// Description.
    pub description: Option<String>,
}

fn model_from_row(r: &Row<'_>) -> Result<ModelRow, StoreError> {
    Ok(ModelRow {
        key: r.i64(0)?,
        name: r.string(1)?,
        creation_time: r.i64(2)?,
        last_updated_time: r.i64(3)?,
        description: r.opt_string(4)?,
    })
}

/// Looks a registered model up by name; `RESOURCE_DOES_NOT_EXIST` when absent.
pub fn model_row(c: &Conn<'_>, name: &str) -> Result<ModelRow> {
    c.query_opt(
        "SELECT id, name, creation_time, last_updated_time, description \
         FROM registered_models WHERE name = ?1",
        &[name.into()],
        model_from_row,
    )?
    .ok_or_else(|| Error::NotFound(format!("Registered Model with name={name} not found")))
}

/// Fills tags and aliases of the given versions (in place), a few statements per page.
pub fn attach_version_details(c: &Conn<'_>, rows: &mut [VersionRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        index.insert((r.model_key, r.version.version), i);
    }
    let keys: Vec<(i64, i64)> = index.keys().copied().collect();
    for chunk in keys.chunks(400) {
        // Typed, so PostgreSQL does not read the VALUES list as text.
        let pairs = vec!["(CAST(? AS BIGINT), CAST(? AS BIGINT))"; chunk.len()].join(", ");
        let params: Vec<Value<'_>> = chunk
            .iter()
            .flat_map(|(m, v)| [Value::Int(*m), Value::Int(*v)])
            .collect();
        let tags = c.query(
            &format!(
                "SELECT model, version, key, value FROM model_version_tags \
                 WHERE (model, version) IN (VALUES {pairs}) ORDER BY key"
            ),
            &params,
            |r| Ok((r.i64(0)?, r.i64(1)?, r.string(2)?, r.string(3)?)),
        )?;
        for (m, v, key, value) in tags {
            if let Some(&i) = index.get(&(m, v)) {
                rows[i].version.tags.push(KeyValue { key, value });
            }
        }
        let aliases = c.query(
            &format!(
                "SELECT model, version, alias FROM registered_model_aliases \
                 WHERE (model, version) IN (VALUES {pairs}) ORDER BY alias"
            ),
            &params,
            |r| Ok((r.i64(0)?, r.i64(1)?, r.string(2)?)),
        )?;
        for (m, v, alias) in aliases {
            if let Some(&i) = index.get(&(m, v)) {
                rows[i].version.aliases.push(alias);
            }
        }
    }
    Ok(())
}

/// Loads one live version with its tags and aliases.
pub fn get_version(c: &Conn<'_>, name: &str, version: i64) -> Result<(ModelVersion, i64)> {
    let row = c.query_opt(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions mv \
             JOIN registered_models rm ON rm.id = mv.model \
             WHERE rm.name = ?1 AND mv.version = ?2"
        ),
        &[name.into(), version.into()],
        version_from_row,
    )?;
    let Some(row) = row else {
        return Err(Error::NotFound(format!(
            "Model Version (name={name}, version={version}) not found"
        )));
    };
    let key = row.model_key;
    let mut rows = vec![row];
    attach_version_details(c, &mut rows)?;
    let v = rows.pop().map(|r| r.version).ok_or_else(|| {
        Error::NotFound(format!(
            "Model Version (name={name}, version={version}) not found"
        ))
    })?;
    Ok((v, key))
}

/// Runs a version query (built by the caller from [`VERSION_COLUMNS`]) and attaches details.
pub fn query_versions(c: &Conn<'_>, sql: &str, params: &[Value<'_>]) -> Result<Vec<ModelVersion>> {
    let mut rows = c.query(sql, params, version_from_row)?;
    attach_version_details(c, &mut rows)?;
    Ok(rows.into_iter().map(|r| r.version).collect())
}

/// The latest live version in each stage of a model, highest version first.
pub fn latest_versions(c: &Conn<'_>, key: i64) -> Result<Vec<ModelVersion>> {
    query_versions(
        c,
        &format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions mv \
             JOIN registered_models rm ON rm.id = mv.model \
             WHERE mv.model = ?1 AND mv.version IN \
               (SELECT MAX(version) FROM model_versions WHERE model = ?1 GROUP BY stage) \
             ORDER BY mv.version DESC"
        ),
        &[key.into()],
    )
}

/// Loads a full registered model (tags, aliases, latest versions per stage).
pub fn load_model(c: &Conn<'_>, row: ModelRow) -> Result<RegisteredModel> {
    let tags = c.query(
        "SELECT key, value FROM registered_model_tags WHERE model = ?1 ORDER BY key",
        &[row.key.into()],
        |r| {
            Ok(KeyValue {
                key: r.string(0)?,
                value: r.string(1)?,
            })
        },
    )?;
    let aliases = c.query(
        "SELECT alias, version FROM registered_model_aliases WHERE model = ?1 ORDER BY alias",
        &[row.key.into()],
        |r| {
            Ok(Alias {
                alias: r.string(0)?,
                version: r.i64(1)?,
            })
        },
    )?;
    let latest_versions = latest_versions(c, row.key)?;
    Ok(RegisteredModel {
        name: row.name,
        creation_timestamp: row.creation_time,
        last_updated_timestamp: row.last_updated_time,
        description: row.description,
        latest_versions,
        tags,
        aliases,
    })
}

/// Loads the registered models a query selects (in its order) with tags, aliases and latest
/// versions: four statements per chunk of 400 models, whatever the page size.
pub fn load_models_by_query(
    c: &Conn<'_>,
    sql: &str,
    params: &[Value<'_>],
) -> Result<Vec<RegisteredModel>> {
    let rows = c.query(sql, params, model_from_row)?;
    let mut models: Vec<RegisteredModel> = Vec::with_capacity(rows.len());
    let mut index: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        index.insert(r.key, i);
    }
    let keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
    for r in rows {
        models.push(RegisteredModel {
            name: r.name,
            creation_timestamp: r.creation_time,
            last_updated_timestamp: r.last_updated_time,
            description: r.description,
            latest_versions: Vec::new(),
            tags: Vec::new(),
            aliases: Vec::new(),
        });
    }
    for chunk in keys.chunks(400) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let params: Vec<Value<'_>> = chunk.iter().map(|k| Value::Int(*k)).collect();
        for (model, key, value) in c.query(
            &format!(
                "SELECT model, key, value FROM registered_model_tags WHERE model IN ({marks}) \
                 ORDER BY model, key"
            ),
            &params,
            |r| Ok((r.i64(0)?, r.string(1)?, r.string(2)?)),
        )? {
            if let Some(&i) = index.get(&model) {
                models[i].tags.push(KeyValue { key, value });
            }
        }
        for (model, alias, version) in c.query(
            &format!(
                "SELECT model, alias, version FROM registered_model_aliases \
                 WHERE model IN ({marks}) ORDER BY model, alias"
            ),
            &params,
            |r| Ok((r.i64(0)?, r.string(1)?, r.i64(2)?)),
        )? {
            if let Some(&i) = index.get(&model) {
                models[i].aliases.push(Alias { alias, version });
            }
        }
        let mut latest = c.query(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions mv \
                 JOIN registered_models rm ON rm.id = mv.model \
                 WHERE mv.model IN ({marks}) AND mv.version = \
                   (SELECT MAX(x.version) FROM model_versions x \
                    WHERE x.model = mv.model AND x.stage = mv.stage) \
                 ORDER BY mv.model, mv.version DESC"
            ),
            &params,
            version_from_row,
        )?;
        attach_version_details(c, &mut latest)?;
        for v in latest {
            if let Some(&i) = index.get(&v.model_key) {
                models[i].latest_versions.push(v.version);
            }
        }
    }
    Ok(models)
}

/// Sets `last_updated_time` of a registered model.
pub fn touch_model(c: &Conn<'_>, key: i64, now: i64) -> Result<()> {
    c.execute(
        "UPDATE registered_models SET last_updated_time = ?2 WHERE id = ?1",
        &[key.into(), now.into()],
    )?;
    Ok(())
}

/// Appends an event to the change feed; returns its sequence number. The event is tied to the
/// registered model currently named `name` (record it before deleting the model).
pub fn record_event(
    c: &Conn<'_>,
    now: i64,
    event: &str,
    name: &str,
    version: Option<i64>,
    data: &serde_json::Value,
) -> Result<i64> {
    let seq = c
        .query_opt(
            "INSERT INTO registry_events (time, event, model_key, model_name, version, data) \
             VALUES (?1, ?2, (SELECT id FROM registered_models WHERE name = ?3), ?3, ?4, ?5) \
             RETURNING seq",
            &[
                now.into(),
                event.into(),
                name.into(),
                version.into(),
                data.to_string().into(),
            ],
            |r| r.i64(0),
        )?
        .ok_or_else(|| StoreError::Worker("INSERT … RETURNING gave no row".into()))?;
    Ok(seq)
}

/// Which events to list.
#[derive(Debug, Clone, Copy)]
pub enum EventScope<'a> {
    /// Every event.
    All,
    /// Events of the registered model now named this (including those from before a rename);
    /// for a name no model has any more, the events recorded under that name.
    Model(&'a str),
    /// Events of one registered model by its key.
    Key(i64),
    /// Events of one version (registered model key, version).
    Version(i64, i64),
}

/// Events after `after`, oldest first, at most `limit`.
pub fn events_after(
    c: &Conn<'_>,
    after: i64,
    limit: i64,
    scope: EventScope<'_>,
) -> Result<Vec<RegistryEvent>> {
    let map = |r: &Row<'_>| -> Result<RegistryEvent, StoreError> {
        let data: serde_json::Value =
            serde_json::from_str(r.str(5)?).unwrap_or(serde_json::Value::Null);
        Ok(RegistryEvent {
            seq: r.i64(0)?,
            timestamp: r.i64(1)?,
            event: r.string(2)?,
            name: r.string(3)?,
            version: r.opt_i64(4)?,
            data,
        })
    };
    const COLS: &str = "SELECT seq, time, event, model_name, version, data FROM registry_events";
    let scope = match scope {
        EventScope::Model(name) => {
            let key = c.query_opt(
                "SELECT id FROM registered_models WHERE name = ?1",
                &[name.into()],
                |r| r.i64(0),
            )?;
            match key {
                Some(k) => EventScope::Key(k),
                None => {
                    return Ok(c.query(
                        &format!("{COLS} WHERE model_name = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
                        &[name.into(), after.into(), limit.into()],
                        map,
                    )?);
                }
            }
        }
        other => other,
    };
    Ok(match scope {
        EventScope::Version(k, v) => c.query(
            &format!(
                "{COLS} WHERE model_key = ?1 AND version = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4"
            ),
            &[k.into(), v.into(), after.into(), limit.into()],
            map,
        )?,
        EventScope::Key(k) => c.query(
            &format!("{COLS} WHERE model_key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
            &[k.into(), after.into(), limit.into()],
            map,
        )?,
        _ => c.query(
            &format!("{COLS} WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            &[after.into(), limit.into()],
            map,
        )?,
    })
}

/// Highest sequence number in the feed (0 when empty).
pub fn last_seq(c: &Conn<'_>) -> Result<i64> {
    Ok(c.query_opt(
        "SELECT COALESCE(MAX(seq), 0) FROM registry_events",
        &[],
        |r| r.i64(0),
    )?
    .unwrap_or(0))
}
