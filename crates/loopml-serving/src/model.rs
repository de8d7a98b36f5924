//! One loaded ONNX model: its input/output specs and a pool of ONNX Runtime sessions (a session
//! runs one call at a time, so concurrent requests take different sessions).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::session::Session;

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorSpec};

/// The ONNX file behind `path`: the file itself, or, for an MLflow model directory (one with an
/// `MLmodel` file, as `mlflow.onnx.log_model` writes it), the file its `onnx` flavor names.
pub fn onnx_file(path: &Path) -> Result<std::path::PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let mlmodel = path.join("MLmodel");
    let text = std::fs::read_to_string(&mlmodel).map_err(|_| {
        Error::Model(format!(
            "{}: not an ONNX file, nor an MLflow model directory (no MLmodel file)",
            path.display()
        ))
    })?;
    let doc: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        Error::Model(format!(
            "{}: not a valid MLmodel file: {e}",
            mlmodel.display()
        ))
    })?;
    let Some(data) = doc["flavors"]["onnx"]["data"].as_str() else {
        return Err(Error::Model(format!(
            "{}: the model has no onnx flavor (log it with mlflow.onnx.log_model)",
            mlmodel.display()
        )));
    };
    let file = std::path::Path::new(data);
    if data.is_empty()
        || file.is_absolute()
        || file
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Model(format!(
            "{}: the onnx flavor's data path '{data}' is not inside the model directory",
            mlmodel.display()
        )));
    }
    Ok(path.join(file))
}

/// Outputs of one call: tensors in the model's output order, with class labels for outputs that
/// were maps (ZipMap).
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    /// One tensor per model output.
    pub tensors: Vec<Tensor>,
    /// Per output: the class labels of a ZipMap output's columns.
    pub labels: Vec<Option<Vec<String>>>,
}

/// A loaded ONNX model.
pub struct OnnxModel {
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl OnnxModel {
    /// Loads `path` into `sessions` sessions (at least one), each running on one thread.
    pub fn load(path: &Path, sessions: usize) -> Result<Self> {
        let env = crate::runtime::environment(None)?;
        let bad = |e: String| Error::Model(format!("{}: {e}", path.display()));
        if !path.is_file() {
            return Err(bad("no such model file".into()));
        }
        let mut pool = Vec::with_capacity(sessions.max(1));
        for _ in 0..sessions.max(1) {
            let session = Session::builder(env)
                .map_err(|e| bad(e.to_string()))?
                .with_intra_threads(1)
                .map_err(|e| bad(e.to_string()))?
                .commit_from_file(path)
                .map_err(|e| bad(e.to_string()))?;
            pool.push(Mutex::new(session));
        }
        let first = pool[0]
            .lock()
            .map_err(|_| bad("session lock poisoned".into()))?;
        let inputs = first
            .inputs()
            .iter()
            .map(TensorSpec::from_outlet)
            .collect::<Result<Vec<_>>>()?;
        let outputs = first
            .outputs()
            .iter()
            .map(TensorSpec::from_outlet)
            .collect::<Result<Vec<_>>>()?;
        drop(first);
        Ok(Self {
            inputs,
            outputs,
            sessions: pool,
            next: AtomicUsize::new(0),
        })
    }

    /// The model's inputs.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The model's outputs.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Checks the inputs against the model (every input present once, known names, shapes that
    /// fit), converts numbers to the model's element types, and orders them as the model does.
    pub fn prepare(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let mut slots: Vec<Option<Tensor>> = self.inputs.iter().map(|_| None).collect();
        for t in inputs {
            let Some(i) = self.inputs.iter().position(|s| s.name == t.name) else {
                return Err(Error::InvalidInput(format!(
                    "unknown input '{}'; the model's inputs are {}",
                    t.name,
                    self.input_names()
                )));
            };
            if slots[i].is_some() {
                return Err(Error::InvalidInput(format!(
                    "input '{}' is given more than once",
                    t.name
                )));
            }
            t.check()?;
            let spec = &self.inputs[i];
            if !spec.accepts(&t.shape) {
                return Err(Error::InvalidInput(format!(
                    "input '{}': shape {:?} does not fit the model's {:?} (-1: any size)",
                    t.name, t.shape, spec.shape
                )));
            }
            let data = t.data.cast(spec.datatype, &t.name)?;
            slots[i] = Some(Tensor { data, ..t });
        }
        slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(t, s)| {
                t.ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "missing input '{}' ({} {:?})",
                        s.name,
                        s.datatype.name(),
                        s.shape
                    ))
                })
            })
            .collect()
    }

    fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|s| format!("'{}'", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs the model on inputs already checked by [`OnnxModel::prepare`] (blocking: call it off
    /// the async executor).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Outputs> {
        let session = self.session()?;
        self.run_with(session, inputs)
    }

    /// Runs on session `k` (modulo the pool size), waiting for it if it is busy: a queue worker
    /// that owns session `k` never waits (blocking, like [`OnnxModel::run`]).
    pub fn run_on(&self, k: usize, inputs: &[Tensor]) -> Result<Outputs> {
        let session = self.sessions[k % self.sessions.len()]
            .lock()
            .map_err(|_| Error::Inference("a previous call crashed this session".into()))?;
        self.run_with(session, inputs)
    }

    /// The number of sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn run_with(
        &self,
        mut session: std::sync::MutexGuard<'_, Session>,
        inputs: &[Tensor],
    ) -> Result<Outputs> {
        let values: Vec<(&str, ort::session::SessionInputValue<'_>)> = inputs
            .iter()
            .map(|t| Ok((t.name.as_str(), t.to_ort()?)))
            .collect::<Result<_>>()?;
        let out = session
            .run(values)
            .map_err(|e| Error::Inference(e.to_string()))?;
        let mut tensors = Vec::with_capacity(self.outputs.len());
        let mut labels = Vec::with_capacity(self.outputs.len());
        for spec in &self.outputs {
            let value = out.get(&spec.name).ok_or_else(|| {
                Error::Inference(format!("the model did not produce output '{}'", spec.name))
            })?;
            let (t, l) = Tensor::from_ort(&spec.name, value)?;
            tensors.push(t);
            labels.push(l);
        }
        Ok(Outputs { tensors, labels })
    }

    /// A free session if there is one, else the next in turn (waiting for it).
    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if let Ok(s) = self.sessions[(start + k) % n].try_lock() {
                return Ok(s);
            }
        }
        self.sessions[start % n]
            .lock()
            .map_err(|_| Error::Inference("a previous call crashed this session".into()))
    }
}
