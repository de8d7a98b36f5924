//! The floor for `bench/serving`: a minimal axum + `ort` server doing nothing but inference.
//!
//! `rawort --model NAME=FILE.onnx [--host 127.0.0.1] [--port 8080] [--sessions N] [--threads]`
//!
//! Loads one ONNX file into a pool of N sessions (default: one per core, one intra-op thread
//! each, each behind a Mutex because `Session::run` takes `&mut self`) and answers
//! `POST /v2/models/{name}/infer` with Open Inference Protocol v2 JSON, running the call in
//! `spawn_blocking`. Inputs: flat `data` arrays of FP32. Outputs: every model output that is an
//! FP32 or INT64 tensor. Plus `GET /v2/models/{name}/ready` for the benchmark's readiness probe.
//! No logging, no metrics, no batching. ONNX Runtime comes from `ORT_DYLIB_PATH`.
//!
//! `--threads` swaps `spawn_blocking` for one thread per session that owns it, fed by a shared
//! queue (loopml's design since its per-session inference threads): the "same threading" floor,
//! against which loopml's ratio measures only its deployment, logging and metrics machinery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

type Job = (
    InferRequest,
    tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
);

struct Model {
    name: String,
    /// With `--threads`: the queue of the per-session threads.
    queue: Option<Mutex<std::sync::mpsc::Sender<Job>>>,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    /// (name, element type) of each output served.
    outputs: Vec<(String, TensorElementType)>,
}

#[derive(Deserialize)]
struct InferRequest {
    inputs: Vec<InputTensor>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    data: Vec<f32>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    outputs: Vec<OutputTensor>,
}

#[derive(Serialize)]
struct OutputTensor {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
    data: OutputData,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rawort: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut host = "127.0.0.1".to_string();
    let mut port = "8080".to_string();
    let mut model = None;
    let mut sessions = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--host" => host = val()?,
            "--port" => port = val()?,
            "--model" => model = Some(val()?),
            "--sessions" => sessions = val()?.parse().map_err(|_| "--sessions: not a number")?,
            "--threads" => threads = true,
            _ => {
                return Err(format!(
                    "unknown argument {a:?}; usage: rawort --model NAME=FILE.onnx [--host H] [--port P] [--sessions N] [--threads]"
                ));
            }
        }
    }
    let spec = model.ok_or("--model NAME=FILE.onnx is required")?;
    let (name, file) = spec.split_once('=').ok_or("--model takes NAME=FILE.onnx")?;

    let lib =
        std::env::var("ORT_DYLIB_PATH").map_err(|_| "set ORT_DYLIB_PATH to libonnxruntime.so")?;
    let env = ort::init_from(&lib)
        .map_err(|e| format!("loading {lib}: {e}"))?
        .with_name("rawort")
        .build()
        .map_err(|e| format!("starting ONNX Runtime: {e}"))?;
    let mut pool = Vec::new();
    for _ in 0..sessions.max(1) {
        let s = Session::builder(&env)
            .map_err(|e| e.to_string())?
            .with_intra_threads(1)
            .map_err(|e| e.to_string())?
            .commit_from_file(file)
            .map_err(|e| format!("{file}: {e}"))?;
        pool.push(Mutex::new(s));
    }
    let outputs = pool[0]
        .lock()
        .map_err(|_| "poisoned")?
        .outputs()
        .iter()
        .filter_map(|o| match o.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                ..
            } => Some((o.name().to_string(), TensorElementType::Float32)),
            ValueType::Tensor {
                ty: TensorElementType::Int64,
                ..
            } => Some((o.name().to_string(), TensorElementType::Int64)),
            _ => None,
        })
        .collect();
    let (queue, jobs) = if threads {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        (Some(Mutex::new(tx)), Some(Arc::new(Mutex::new(rx))))
    } else {
        (None, None)
    };
    let model = Arc::new(Model {
        name: name.to_string(),
        queue,
        sessions: pool,
        next: AtomicUsize::new(0),
        outputs,
    });

    if let Some(jobs) = jobs {
        for k in 0..model.sessions.len() {
            let (m, j) = (Arc::clone(&model), Arc::clone(&jobs));
            std::thread::Builder::new()
                .name(format!("rawort-infer-{k}"))
                .spawn(move || worker(&m, k, &j))
                .map_err(|e| e.to_string())?;
        }
    }
    let app = Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/ready", get(ready))
        .with_state(model);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(format!("{host}:{port}"))
            .await
            .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())
    })
}

async fn ready(State(m): State<Arc<Model>>, Path(name): Path<String>) -> StatusCode {
    if name == m.name {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn infer(State(m): State<Arc<Model>>, Path(name): Path<String>, body: Bytes) -> Response {
    if name != m.name {
        return (StatusCode::NOT_FOUND, "unknown model").into_response();
    }
    let req: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let answer = match &m.queue {
        Some(q) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = q
                .lock()
                .map_err(|e| e.to_string())
                .and_then(|q| q.send((req, tx)).map_err(|e| e.to_string()));
            match sent {
                Ok(()) => rx.await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        }
        None => tokio::task::spawn_blocking(move || predict(&m, None, req))
            .await
            .map_err(|e| e.to_string()),
    };
    match answer {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// A per-session thread: takes jobs from the shared queue and runs them on session `k`.
fn worker(m: &Model, k: usize, jobs: &Mutex<std::sync::mpsc::Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((req, reply)) = job else { return };
        let _ = reply.send(predict(m, Some(k), req));
    }
}

fn predict(m: &Model, own: Option<usize>, req: InferRequest) -> Result<Vec<u8>, String> {
    let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(req.inputs.len());
    for t in req.inputs {
        let v = Tensor::from_array((t.shape, t.data)).map_err(|e| e.to_string())?;
        inputs.push((t.name, v.into()));
    }
    // A free session if there is one, else wait for the next in turn.
    let n = m.sessions.len();
    let start = m.next.fetch_add(1, Ordering::Relaxed);
    let mut session = match own {
        Some(k) => m.sessions[k % n].lock(),
        None => (0..n)
            .find_map(|k| m.sessions[(start + k) % n].try_lock().ok())
            .map_or_else(|| m.sessions[start % n].lock(), Ok),
    }
    .map_err(|_| "session poisoned".to_string())?;
    let out = session.run(inputs).map_err(|e| e.to_string())?;
    let mut outputs = Vec::with_capacity(m.outputs.len());
    for (name, ty) in &m.outputs {
        let v = &out[name.as_str()];
        let (shape, data, datatype) = if *ty == TensorElementType::Int64 {
            let (s, d) = v.try_extract_tensor::<i64>().map_err(|e| e.to_string())?;
            (s.to_vec(), OutputData::I64(d.to_vec()), "INT64")
        } else {
            let (s, d) = v.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
            (s.to_vec(), OutputData::F32(d.to_vec()), "FP32")
        };
        outputs.push(OutputTensor {
            name: name.clone(),
            datatype,
            shape,
            data,
        });
    }
    drop(out);
    drop(session);
    serde_json::to_vec(&InferResponse {
        model_name: &m.name,
        outputs,
    })
    .map_err(|e| e.to_string())
}
