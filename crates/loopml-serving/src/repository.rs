//! The models a server holds: name → loaded versions, each an [`OnnxModel`] with where it came
//! from. Loading happens off the async executor; swapping a version in or out is one map update,
//! so requests in flight keep the model they started with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::OnnxModel;
use crate::tensor::Tensor;

/// Where a registry URI's model files are, as the binary's registry adapter answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    /// The registry version (`3`), used as the served version label.
    pub version: String,
    /// The ONNX file or MLflow model directory on this machine.
    pub path: PathBuf,
}

/// Turns `models:/name@alias` or `models:/name/3` into local model files (the registry, wired in
/// by the binary, so this crate does not depend on it).
pub trait ModelResolver: Send + Sync {
    /// Resolves a registry URI.
    fn resolve<'a>(&'a self, uri: &'a str)
    -> futures::future::BoxFuture<'a, Result<ResolvedModel>>;
}

/// One loaded model version.
#[derive(Debug)]
pub struct Loaded {
    /// Model name (the endpoint name in `/v2/models/{name}`).
    pub name: String,
    /// Version label.
    pub version: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// The runtime model.
    pub model: Arc<OnnxModel>,
    /// Its request queue: a worker per session, batching when configured.
    pub queue: crate::batcher::Batcher,
}

impl Loaded {
    /// Runs prepared inputs through the model's queue.
    pub async fn infer(&self, inputs: Arc<Vec<Tensor>>) -> Result<crate::model::Outputs> {
        self.queue.infer(inputs).await
    }
}

/// A row of the repository index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `READY`.
    pub state: &'static str,
}

/// Loaded models by name; versions by label, newest registered last.
#[derive(Debug, Default, Clone)]
pub struct Repository {
    models: Arc<RwLock<BTreeMap<String, Vec<Arc<Loaded>>>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Checks a model name: 1–128 letters, digits, `_`, `-`, `.`, not starting with `.`.
pub fn validate_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid model name '{name}': use 1–128 letters, digits, '_', '-' or '.', not \
             starting with '.'"
        )))
    }
}

impl Repository {
    /// An empty repository whose models report batch sizes and queue times to `metrics`.
    pub fn with_metrics(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            models: Arc::default(),
            metrics: Some(metrics),
        }
    }

    /// Loads an ONNX file as `name` version `version` (replacing that version if loaded) with
    /// `sessions` sessions. Blocking: call it off the async executor.
    pub fn load(
        &self,
        name: &str,
        version: &str,
        path: PathBuf,
        sessions: usize,
        batching: &crate::batcher::BatchConfig,
    ) -> Result<Arc<Loaded>> {
        validate_model_name(name)?;
        batching.check()?;
        let model = Arc::new(OnnxModel::load(&path, sessions)?);
        let observer = self.metrics.as_ref().map(|m| {
            m.queue_observer(&crate::metrics::ModelLabels {
                model: name.to_string(),
                version: version.to_string(),
            })
        });
        let queue = crate::batcher::Batcher::start(
            Arc::clone(&model),
            batching.clone(),
            model.sessions(),
            observer,
        )?;
        let loaded = Arc::new(Loaded {
            name: name.to_string(),
            version: version.to_string(),
            path,
            model,
            queue,
        });
        let mut models = self
            .models
            .write()
            .map_err(|_| Error::Model("model table lock poisoned".into()))?;
        let versions = models.entry(name.to_string()).or_default();
        versions.retain(|v| v.version != version);
        versions.push(Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Keeps only `version` of `name` (after a swap).
    pub fn keep_only(&self, name: &str, version: &str) {
        if let Ok(mut models) = self.models.write()
            && let Some(versions) = models.get_mut(name)
        {
            versions.retain(|l| l.version == version);
        }
    }

    /// Unloads a model (every version), or one version.
    pub fn unload(&self, name: &str, version: Option<&str>) -> Result<()> {
        let mut models = self
            .models
            .write()
            .map_err(|_| Error::Model("model table lock poisoned".into()))?;
        let Some(versions) = models.get_mut(name) else {
            return Err(Error::NotFound(format!("model '{name}' is not loaded")));
        };
        match version {
            None => {
                models.remove(name);
            }
            Some(v) => {
                let before = versions.len();
                versions.retain(|l| l.version != v);
                if versions.len() == before {
                    return Err(Error::NotFound(format!(
                        "model '{name}' has no loaded version '{v}'"
                    )));
                }
                if versions.is_empty() {
                    models.remove(name);
                }
            }
        }
        Ok(())
    }

    /// A loaded version (the latest loaded when `version` is `None`).
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<Loaded>> {
        let models = self
            .models
            .read()
            .map_err(|_| Error::Model("model table lock poisoned".into()))?;
        let versions = models
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("model '{name}' is not loaded")))?;
        let found = match version {
            None => versions.last(),
            Some(v) => versions.iter().find(|l| l.version == v),
        };
        found.cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "model '{name}' has no loaded version '{}'",
                version.unwrap_or("")
            ))
        })
    }

    /// Versions loaded under `name`.
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.models
            .read()
            .map(|m| {
                m.get(name)
                    .map(|v| v.iter().map(|l| l.version.clone()).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Every loaded version.
    pub fn index(&self) -> Vec<IndexEntry> {
        self.models
            .read()
            .map(|m| {
                m.values()
                    .flatten()
                    .map(|l| IndexEntry {
                        name: l.name.clone(),
                        version: l.version.clone(),
                        state: "READY",
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The only loaded model, when exactly one is (MLflow's `/invocations` serves one model).
    pub fn single(&self) -> Result<Arc<Loaded>> {
        let models = self
            .models
            .read()
            .map_err(|_| Error::Model("model table lock poisoned".into()))?;
        let mut all = models.values().filter_map(|v| v.last());
        match (all.next(), all.next()) {
            (Some(one), None) => Ok(Arc::clone(one)),
            (None, _) => Err(Error::NotFound("no model is loaded".into())),
            (Some(_), Some(_)) => Err(Error::InvalidInput(
                "several models are loaded: call /v2/models/{name}/infer, or \
                 /invocations?model={name}"
                    .into(),
            )),
        }
    }
}
