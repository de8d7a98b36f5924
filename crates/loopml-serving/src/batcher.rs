//! The request queue of one model, with dynamic batching (Triton's dynamic batcher): requests
//! wait in a bounded queue; a worker thread per session (which owns that session, like a Triton
//! model instance) takes the oldest, then, when batching is on, gathers more until the batch
//! reaches `max_batch_size` rows (or a preferred size), or the oldest has waited
//! `max_queue_delay`; it runs the batch as one call, concatenating inputs along the first
//! dimension, and hands each caller its rows. With batching off a worker runs one request at a
//! time. A full queue answers [`Error::Overloaded`] (HTTP 429) at once instead of letting latency
//! grow without bound.
//!
//! Every model has one: a fixed set of inference threads, each with its own session, costs
//! fewer thread switches and lock waits than a blocking-pool thread per request contending for
//! the sessions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{OnnxModel, Outputs};
use crate::tensor::{Tensor, TensorData};

/// Batching settings of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Rows per batch at most; 0 or 1 turns batching off.
    #[serde(default)]
    pub max_batch_size: usize,
    /// How long the oldest request may wait for others, in microseconds.
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Batch sizes worth running at once when reached before the delay is up.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests waiting at most; more are refused with 429.
    #[serde(default = "default_queue")]
    pub max_queue_size: usize,
}

fn default_queue() -> usize {
    1024
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 0,
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: default_queue(),
        }
    }
}

impl BatchConfig {
    /// Whether requests are batched.
    pub fn enabled(&self) -> bool {
        self.max_batch_size > 1
    }

    /// Checks the settings.
    pub fn check(&self) -> Result<()> {
        if self.max_queue_size == 0 {
            return Err(Error::InvalidInput(
                "max_queue_size must be at least 1".into(),
            ));
        }
        if self.max_queue_delay_us > 10_000_000 {
            return Err(Error::InvalidInput(
                "max_queue_delay_us must be at most 10 s".into(),
            ));
        }
        if let Some(p) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&p| p == 0 || (self.enabled() && p > self.max_batch_size))
        {
            return Err(Error::InvalidInput(format!(
                "preferred batch size {p} must be between 1 and max_batch_size"
            )));
        }
        Ok(())
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Outputs>>;

struct Job {
    inputs: Arc<Vec<Tensor>>,
    rows: usize,
    reply: Reply,
    queued: Instant,
}

/// Where a queue reports every model call: its rows, and each request's wait in the queue.
#[derive(Debug, Clone)]
pub struct BatchObserver {
    /// Rows per model call.
    pub batch_sizes: prometheus_client::metrics::histogram::Histogram,
    /// Seconds each request waited before its call started.
    pub queue_seconds: prometheus_client::metrics::histogram::Histogram,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Workers waiting for jobs, the latest last: a new job wakes the one that went idle last
    /// (its caches and session are warm; a FIFO wake-up would rotate through all of them), and
    /// wakes nobody when every worker is busy (a wake-up is a system call).
    idle: Vec<usize>,
}

/// The queue, and one condition variable per worker (so a wake-up picks the worker).
struct Shared {
    queue: Mutex<Queue>,
    wake: Vec<Condvar>,
}

impl Shared {
    /// Waits on worker `me`'s condition variable (at most `timeout`), listed as idle meanwhile.
    fn wait<'a>(
        &self,
        me: usize,
        mut q: std::sync::MutexGuard<'a, Queue>,
        timeout: Option<Duration>,
    ) -> Option<std::sync::MutexGuard<'a, Queue>> {
        q.idle.push(me);
        let mut q = match timeout {
            Some(t) => self.wake[me].wait_timeout(q, t).ok()?.0,
            None => self.wake[me].wait(q).ok()?,
        };
        // Woken by a job, the worker was taken off the list; by a timeout, it takes itself off.
        q.idle.retain(|&w| w != me);
        Some(q)
    }
}

/// Counts of what the batcher ran.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Model calls made.
    pub calls: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
}

/// The request queue of one model and its workers.
pub struct Batcher {
    config: BatchConfig,
    shared: Arc<Shared>,
    stats: Arc<BatchStats>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("config", &self.config)
            .finish()
    }
}

impl Batcher {
    /// Starts `workers` worker threads over `model`; worker `i` runs on session `i`.
    pub fn start(
        model: Arc<OnnxModel>,
        config: BatchConfig,
        workers: usize,
        observer: Option<BatchObserver>,
    ) -> Result<Self> {
        config.check()?;
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
                idle: Vec::with_capacity(workers),
            }),
            wake: (0..workers).map(|_| Condvar::new()).collect(),
        });
        let stats = Arc::new(BatchStats::default());
        for i in 0..workers {
            let (q, m, c) = (Arc::clone(&shared), Arc::clone(&model), config.clone());
            let st = Arc::clone(&stats);
            let obs = observer.clone();
            std::thread::Builder::new()
                .name(format!("loopml-infer-{i}"))
                .spawn(move || worker(i, &q, &m, &c, &st, obs.as_ref()))
                .map_err(|e| Error::Model(format!("cannot start a batching thread: {e}")))?;
        }
        Ok(Self {
            config,
            shared,
            stats,
        })
    }

    /// Model calls made and requests answered so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.calls.load(Ordering::Relaxed),
            self.stats.requests.load(Ordering::Relaxed),
        )
    }

    /// The settings.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Whether requests are batched.
    pub fn batching(&self) -> bool {
        self.config.enabled()
    }

    /// Queues prepared inputs; resolves when their batch has run.
    pub async fn infer(&self, inputs: Arc<Vec<Tensor>>) -> Result<Outputs> {
        let rows = inputs
            .first()
            .and_then(|t| t.shape.first())
            .map_or(1, |&r| r.max(0) as usize);
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = self
                .shared
                .queue
                .lock()
                .map_err(|_| Error::Inference("batch queue lock poisoned".into()))?;
            if q.jobs.len() >= self.config.max_queue_size {
                return Err(Error::Overloaded(format!(
                    "the model's queue is full ({} requests waiting); retry later",
                    q.jobs.len()
                )));
            }
            q.jobs.push_back(Job {
                inputs,
                rows,
                reply: tx,
                queued: Instant::now(),
            });
            if let Some(w) = q.idle.pop() {
                self.shared.wake[w].notify_one();
            }
        }
        rx.await
            .map_err(|_| Error::Inference("the batch worker stopped".into()))?
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        self.shared.wake.iter().for_each(Condvar::notify_all);
    }
}

fn worker(
    session: usize,
    shared: &Shared,
    model: &OnnxModel,
    config: &BatchConfig,
    stats: &BatchStats,
    observer: Option<&BatchObserver>,
) {
    let delay = Duration::from_micros(config.max_queue_delay_us);
    loop {
        let mut batch: Vec<Job> = Vec::new();
        {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.jobs.is_empty() {
                if q.closed {
                    return;
                }
                q = match shared.wait(session, q, None) {
                    Some(q) => q,
                    None => return,
                };
            }
            let started = Instant::now();
            let mut rows = 0;
            loop {
                // Take what fits; stop at max_batch_size or a preferred size.
                while let Some(next) = q.jobs.front() {
                    if !batch.is_empty() && rows + next.rows > config.max_batch_size.max(1) {
                        break;
                    }
                    if let Some(job) = q.jobs.pop_front() {
                        rows += job.rows;
                        batch.push(job);
                    }
                }
                let full = rows >= config.max_batch_size
                    || config.preferred_batch_sizes.contains(&rows)
                    || !q.jobs.is_empty();
                let waited = started.elapsed();
                if full || waited >= delay || q.closed {
                    break;
                }
                q = match shared.wait(session, q, Some(delay - waited)) {
                    Some(q) => q,
                    None => return,
                };
            }
        }
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(obs) = observer {
            let now = Instant::now();
            for j in &batch {
                obs.queue_seconds
                    .observe(now.duration_since(j.queued).as_secs_f64());
            }
            obs.batch_sizes
                .observe(batch.iter().map(|j| j.rows).sum::<usize>() as f64);
        }
        run_batch(session, model, batch, &stats.calls);
    }
}

/// Runs jobs as one call when their inputs stack (same names and trailing dimensions) and the
/// outputs split back by rows; else one call each. Each call is counted in `calls` before its
/// answers are sent, so a caller that has its answer sees the count that includes it.
fn run_batch(session: usize, model: &OnnxModel, batch: Vec<Job>, calls: &AtomicU64) {
    let run_alone = |job: Job| {
        let out = model.run_on(session, &job.inputs);
        calls.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(out);
    };
    if batch.len() == 1 || !stackable(&batch) {
        batch.into_iter().for_each(run_alone);
        return;
    }
    let total: usize = batch.iter().map(|j| j.rows).sum();
    let stacked = stack(&batch, total);
    let out = model.run_on(session, &stacked);
    calls.fetch_add(1, Ordering::Relaxed);
    match out {
        Ok(out)
            if out
                .tensors
                .iter()
                .all(|t| t.shape.first() == Some(&(total as i64))) =>
        {
            let mut start = 0;
            for job in batch {
                let part = slice(&out, start, job.rows, total);
                start += job.rows;
                let _ = job.reply.send(Ok(part));
            }
        }
        // Outputs not batch-major, or the batch failed: run each alone, so one bad request
        // cannot fail the others.
        _ => batch.into_iter().for_each(run_alone),
    }
}

fn stackable(batch: &[Job]) -> bool {
    let first = &batch[0].inputs;
    batch.iter().all(|j| {
        j.inputs.len() == first.len()
            && j.inputs.iter().zip(first.iter()).all(|(a, b)| {
                a.name == b.name
                    && a.data.datatype() == b.data.datatype()
                    && !a.shape.is_empty()
                    && a.shape.len() == b.shape.len()
                    && a.shape[1..] == b.shape[1..]
                    && a.shape[0] as usize == j.rows
            })
    })
}

fn stack(batch: &[Job], total: usize) -> Vec<Tensor> {
    (0..batch[0].inputs.len())
        .map(|i| {
            let first = &batch[0].inputs[i];
            let mut shape = first.shape.clone();
            shape[0] = total as i64;
            let mut data = empty_like(&first.data);
            for j in batch {
                append(&mut data, &j.inputs[i].data);
            }
            Tensor {
                name: first.name.clone(),
                shape,
                data,
            }
        })
        .collect()
}

fn empty_like(d: &TensorData) -> TensorData {
    match d {
        TensorData::Bool(_) => TensorData::Bool(Vec::new()),
        TensorData::U8(_) => TensorData::U8(Vec::new()),
        TensorData::I32(_) => TensorData::I32(Vec::new()),
        TensorData::I64(_) => TensorData::I64(Vec::new()),
        TensorData::F32(_) => TensorData::F32(Vec::new()),
        TensorData::F64(_) => TensorData::F64(Vec::new()),
        TensorData::Bytes(_) => TensorData::Bytes(Vec::new()),
    }
}

fn append(to: &mut TensorData, from: &TensorData) {
    match (to, from) {
        (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
        (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
        (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
        (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
        (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
        (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
        (TensorData::Bytes(a), TensorData::Bytes(b)) => a.extend_from_slice(b),
        _ => {}
    }
}

/// Rows `start..start+rows` of every output.
fn slice(out: &Outputs, start: usize, rows: usize, total: usize) -> Outputs {
    let tensors = out
        .tensors
        .iter()
        .map(|t| {
            let per_row = t.data.len() / total.max(1);
            let (a, b) = (start * per_row, (start + rows) * per_row);
            let data = match &t.data {
                TensorData::Bool(v) => TensorData::Bool(v[a..b].to_vec()),
                TensorData::U8(v) => TensorData::U8(v[a..b].to_vec()),
                TensorData::I32(v) => TensorData::I32(v[a..b].to_vec()),
                TensorData::I64(v) => TensorData::I64(v[a..b].to_vec()),
                TensorData::F32(v) => TensorData::F32(v[a..b].to_vec()),
                TensorData::F64(v) => TensorData::F64(v[a..b].to_vec()),
                TensorData::Bytes(v) => TensorData::Bytes(v[a..b].to_vec()),
            };
            let mut shape = t.shape.clone();
            shape[0] = rows as i64;
            Tensor {
                name: t.name.clone(),
                shape,
                data,
            }
        })
        .collect();
    Outputs {
        tensors,
        labels: out.labels.clone(),
    }
}
