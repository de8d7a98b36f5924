//! The inference log: every answered request (or a sample) as Parquet rows, one row per
//! prediction row: request id, time, deployment, variant, model version, whether it was a shadow
//! copy, status, latency, error, then the inputs (one column per feature) and the outputs
//! (`out_…` columns). Feedback (ground truth, rewards) goes to a second stream and is joined by
//! request id when read.
//!
//! The hot path only hands a record to a bounded queue (`try_send`, never waits); a writer
//! thread groups records by deployment and column layout and writes a Parquet file per group when
//! it holds `flush_rows` rows or its oldest record is `flush_interval` old, when a reader asks for
//! fresh data, and when the log is closed (graceful shutdown drains the queue). A full queue drops
//! the record and counts it (`loopml_inference_log_dropped_total`), so a slow disk can never
//! stall serving. Files go through the artifact store under
//! `inference-log/{deployment}/{first µs}-{last µs}-{seq}-{writer}.parquet` (feedback under
//! `inference-log/{deployment}/feedback/`), so a time window reads only the files that overlap it;
//! `writer` is random per process, so replicas logging to one store never overwrite each other's
//! files (older names without it are read the same way).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray, new_null_array,
};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use loopml_store::{ArtifactPath, ArtifactStore};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::Outputs;
use crate::tensor::{Tensor, TensorData};

mod writer;
use writer::{Writer, base_fields};

/// One logged request.
#[derive(Debug, Clone)]
pub struct Record {
    /// Request id (the caller's, or one loopml made).
    pub request_id: String,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Deployment (endpoint) name.
    pub deployment: String,
    /// Variant that answered.
    pub variant: String,
    /// Model version that answered.
    pub model_version: String,
    /// A mirrored copy whose answer the caller never saw.
    pub shadow: bool,
    /// HTTP status of the answer.
    pub status: u16,
    /// Time to answer, in microseconds.
    pub latency_us: i64,
    /// The error, when it failed.
    pub error: Option<String>,
    /// Inputs as the model received them (empty when the request could not be read); shared
    /// with the model call, not copied.
    pub inputs: Arc<Vec<Tensor>>,
    /// Column names of a DataFrame input (MLflow), used for a single wide input tensor.
    pub columns: Option<Vec<String>>,
    /// Outputs, when it succeeded (shared with the answer, not copied).
    pub outputs: Option<Arc<Outputs>>,
}

/// Feedback on an earlier request: ground truth and/or a reward.
#[derive(Debug, Clone)]
pub struct Feedback {
    /// The request it is about.
    pub request_id: String,
    /// When it arrived (µs since the epoch).
    pub timestamp_us: i64,
    /// Deployment.
    pub deployment: String,
    /// The variant that answered the request, when known.
    pub variant: Option<String>,
    /// Ground truth (a JSON scalar written as text: `1`, `churned`).
    pub truth: Option<String>,
    /// Reward in \[0, 1\].
    pub reward: Option<f64>,
}

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Records waiting for the writer at most; more are dropped and counted.
    pub queue_capacity: usize,
    /// Rows per group that trigger a write.
    pub flush_rows: usize,
    /// Age of a group's oldest record that triggers a write.
    pub flush_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            flush_rows: 50_000,
            flush_interval: Duration::from_secs(2),
        }
    }
}

/// How often the writer drains the queue.
const POLL: Duration = Duration::from_millis(20);

enum Msg {
    Record(Box<Record>),
    Feedback(Feedback),
    Flush(std::sync::mpsc::Sender<Result<()>>),
}

/// Counters of the log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records written to files.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Files written.
    pub files: AtomicU64,
    /// Write failures (the records of a failed write are kept and retried).
    pub failures: AtomicU64,
}

/// Handle to the inference log (cheap to clone).
#[derive(Clone)]
pub struct InferenceLog {
    tx: Arc<RwLock<Option<SyncSender<Msg>>>>,
    store: ArtifactStore,
    stats: Arc<LogStats>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    thread: std::thread::Thread,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for InferenceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceLog")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

/// `inference-log/{deployment}`.
fn dir_of(deployment: &str, feedback: bool) -> Result<ArtifactPath> {
    let raw = if feedback {
        format!("inference-log/{deployment}/feedback")
    } else {
        format!("inference-log/{deployment}")
    };
    ArtifactPath::parse(&raw).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl InferenceLog {
    /// Starts the writer thread over `store`. Must be called inside a Tokio runtime (the writer
    /// uses it for the artifact store's async writes).
    pub fn start(
        store: ArtifactStore,
        config: LogConfig,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
        let stats = Arc::new(LogStats::default());
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Model("the inference log needs a Tokio runtime".into()))?;
        let w = Writer::new(
            store.clone(),
            config,
            Arc::clone(&stats),
            metrics.clone(),
            rt,
        );
        let handle = std::thread::Builder::new()
            .name("loopml-inference-log".into())
            .spawn(move || w.run(&rx))
            .map_err(|e| Error::Model(format!("cannot start the inference-log writer: {e}")))?;
        Ok(Self {
            tx: Arc::new(RwLock::new(Some(tx))),
            store,
            stats,
            thread: handle.thread().clone(),
            writer: Arc::new(Mutex::new(Some(handle))),
            metrics,
        })
    }

    fn send(&self, msg: Msg) -> bool {
        let Ok(guard) = self.tx.read() else {
            return false;
        };
        let Some(tx) = guard.as_ref() else {
            return false;
        };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues a record; drops (and counts) it when the queue is full. Never waits.
    pub fn log(&self, record: Record) {
        if !self.send(Msg::Record(Box::new(record))) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.log_dropped(1);
            }
        }
    }

    /// Queues feedback; waits for room (feedback is rare and must not be lost).
    pub fn feedback(&self, fb: Feedback) -> Result<()> {
        let tx = self
            .tx
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| Error::Model("the inference log is closed".into()))?;
        tx.send(Msg::Feedback(fb))
            .map_err(|_| Error::Model("the inference log is closed".into()))
    }

    /// Writes everything queued so far; resolves once it is in files.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = self
            .tx
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| Error::Model("the inference log is closed".into()))?;
        let thread = self.thread.clone();
        tokio::task::spawn_blocking(move || {
            sender
                .send(Msg::Flush(tx))
                .map_err(|_| Error::Model("the inference-log writer stopped".into()))?;
            thread.unpark();
            rx.recv()
                .map_err(|_| Error::Model("the inference-log writer stopped".into()))?
        })
        .await
        .map_err(|e| Error::Model(format!("flush stopped: {e}")))?
    }

    /// Stops taking records, writes everything queued and waits for the writer (graceful
    /// shutdown). Blocking.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.write() {
            g.take();
        }
        self.thread.unpark();
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }

    /// Counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// The rows of `deployment` logged in `[since, until)` (µs; open ends allowed), optionally
    /// of one variant, with feedback joined (`truth`, `reward`, `feedback_at`), as one batch whose
    /// schema is the union of the files'. Flushes first, so it sees every answered request.
    pub async fn query(&self, q: &LogQuery) -> Result<RecordBatch> {
        self.flush().await?;
        let files = self
            .files(&q.deployment, false, q.since_us, q.until_us)
            .await?;
        let mut batches = Vec::new();
        for f in files {
            let bytes = self.read(&f).await?;
            let q2 = q.clone();
            let part = tokio::task::spawn_blocking(move || read_filtered(bytes, &q2))
                .await
                .map_err(|e| Error::Model(format!("reading the log stopped: {e}")))??;
            batches.extend(part);
        }
        let mut batch = union(&batches)?;
        if let Some(limit) = q.limit
            && batch.num_rows() > limit
        {
            batch = batch.slice(batch.num_rows() - limit, limit);
        }
        if q.feedback {
            let fb = self.feedback_map(&q.deployment).await?;
            batch = join_feedback(&batch, &fb)?;
        }
        Ok(batch)
    }

    async fn read(&self, path: &ArtifactPath) -> Result<bytes::Bytes> {
        use futures::StreamExt;
        let (_, mut stream) = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::Model(format!("reading {path}: {e}")))?;
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(
                &chunk.map_err(|e| Error::Model(format!("reading {path}: {e}")))?,
            );
        }
        Ok(bytes::Bytes::from(buf))
    }

    /// Log files of a deployment overlapping the window, oldest first.
    async fn files(
        &self,
        deployment: &str,
        feedback: bool,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<ArtifactPath>> {
        let dir = dir_of(deployment, feedback)?;
        let entries = match self.store.list(&dir).await {
            Ok(e) => e,
            Err(loopml_store::StoreError::ArtifactNotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(Error::Model(format!("listing the inference log: {e}"))),
        };
        let mut out: Vec<(i64, ArtifactPath)> = entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| {
                let stem = e.name.strip_suffix(".parquet")?;
                let mut parts = stem.split('-');
                let first: i64 = parts.next()?.parse().ok()?;
                let last: i64 = parts.next()?.parse().ok()?;
                let keep = since.is_none_or(|s| last >= s) && until.is_none_or(|u| first < u);
                let path = ArtifactPath::parse(&e.name).ok()?;
                keep.then_some((first, dir.join(&path)))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    /// request id → (truth, reward, time) from every feedback file (the latest wins).
    async fn feedback_map(
        &self,
        deployment: &str,
    ) -> Result<HashMap<String, (Option<String>, Option<f64>, i64)>> {
        let mut map = HashMap::new();
        for f in self.files(deployment, true, None, None).await? {
            let bytes = self.read(&f).await?;
            let batches = tokio::task::spawn_blocking(move || read_all(bytes))
                .await
                .map_err(|e| Error::Model(format!("reading feedback stopped: {e}")))??;
            for b in batches {
                let ids = str_col(&b, "request_id")?;
                let truth = b
                    .column_by_name("truth")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
                let reward = b
                    .column_by_name("reward")
                    .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned());
                let ts = b.column_by_name("timestamp").and_then(|c| {
                    c.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .cloned()
                });
                for i in 0..b.num_rows() {
                    let entry = map
                        .entry(ids.value(i).to_string())
                        .or_insert((None, None, 0));
                    if let Some(t) = &truth
                        && t.is_valid(i)
                    {
                        entry.0 = Some(t.value(i).to_string());
                    }
                    if let Some(r) = &reward
                        && r.is_valid(i)
                    {
                        entry.1 = Some(r.value(i));
                    }
                    if let Some(t) = &ts {
                        entry.2 = t.value(i);
                    }
                }
            }
        }
        Ok(map)
    }
}

/// What to read from the log.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Deployment.
    pub deployment: String,
    /// Start (µs since the epoch, inclusive).
    pub since_us: Option<i64>,
    /// End (exclusive).
    pub until_us: Option<i64>,
    /// Only this variant.
    pub variant: Option<String>,
    /// Only shadow (`true`) or only answered (`false`) rows.
    pub shadow: Option<bool>,
    /// The last `limit` rows at most.
    pub limit: Option<usize>,
    /// Join feedback by request id.
    pub feedback: bool,
}

fn str_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::Model(format!("inference-log file without a '{name}' column")))
}

fn read_all(bytes: bytes::Bytes) -> Result<Vec<RecordBatch>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::Model(format!("unreadable inference-log file: {e}")))?
        .build()
        .map_err(|e| Error::Model(format!("unreadable inference-log file: {e}")))?;
    reader
        .map(|b| b.map_err(|e| Error::Model(format!("unreadable inference-log file: {e}"))))
        .collect()
}

fn read_filtered(bytes: bytes::Bytes, q: &LogQuery) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for b in read_all(bytes)? {
        let ts = b
            .column_by_name("timestamp")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| Error::Model("inference-log file without timestamps".into()))?;
        let variant = str_col(&b, "variant")?;
        let shadow = b
            .column_by_name("shadow")
            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>());
        let keep: BooleanArray = (0..b.num_rows())
            .map(|i| {
                let t = ts.value(i);
                Some(
                    q.since_us.is_none_or(|s| t >= s)
                        && q.until_us.is_none_or(|u| t < u)
                        && q.variant.as_ref().is_none_or(|v| variant.value(i) == v)
                        && q.shadow
                            .is_none_or(|s| shadow.is_some_and(|c| c.value(i) == s)),
                )
            })
            .collect();
        let f = arrow::compute::filter_record_batch(&b, &keep)
            .map_err(|e| Error::Model(format!("filtering the log: {e}")))?;
        if f.num_rows() > 0 {
            out.push(f);
        }
    }
    Ok(out)
}

/// Concatenates batches with different column sets: the union of columns, in first-seen order,
/// missing ones null; a column seen with two types becomes text.
fn union(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = Vec::new();
    for b in batches {
        for f in b.schema().fields() {
            match fields.iter_mut().find(|x| x.name() == f.name()) {
                Some(x) if x.data_type() != f.data_type() => {
                    *x = Field::new(f.name(), ArrowType::Utf8, true);
                }
                Some(_) => {}
                None => fields.push(Field::new(f.name(), f.data_type().clone(), true)),
            }
        }
    }
    if fields.is_empty() {
        fields = base_fields();
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut parts = Vec::with_capacity(batches.len());
    for b in batches {
        let cols: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match b.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
                Some(c) => arrow::compute::cast(c, f.data_type())
                    .map_err(|e| Error::Model(format!("column '{}': {e}", f.name()))),
                None => Ok(new_null_array(f.data_type(), b.num_rows())),
            })
            .collect::<Result<_>>()?;
        parts.push(
            RecordBatch::try_new(Arc::clone(&schema), cols)
                .map_err(|e| Error::Model(format!("merging log files: {e}")))?,
        );
    }
    arrow::compute::concat_batches(&schema, &parts)
        .map_err(|e| Error::Model(format!("merging log files: {e}")))
}

fn join_feedback(
    b: &RecordBatch,
    fb: &HashMap<String, (Option<String>, Option<f64>, i64)>,
) -> Result<RecordBatch> {
    let ids = str_col(b, "request_id")?;
    let get = |i: usize| fb.get(ids.value(i));
    let truth: StringArray = (0..b.num_rows())
        .map(|i| get(i).and_then(|f| f.0.clone()))
        .collect();
    let reward: Float64Array = (0..b.num_rows())
        .map(|i| get(i).and_then(|f| f.1))
        .collect();
    let at: TimestampMicrosecondArray = (0..b.num_rows())
        .map(|i| get(i).map(|f| f.2))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    for (name, col) in [
        ("truth", Arc::new(truth) as ArrayRef),
        ("reward", Arc::new(reward) as ArrayRef),
        ("feedback_at", Arc::new(at) as ArrayRef),
    ] {
        if let Some(i) = fields.iter().position(|f| f.name() == name) {
            fields.remove(i);
            cols.remove(i);
        }
        fields.push(Field::new(name, col.data_type().clone(), true));
        cols.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| Error::Model(format!("joining feedback: {e}")))
}

/// The Parquet bytes of a batch (zstd).
pub fn to_parquet(batch: &RecordBatch) -> Result<Vec<u8>> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::default(),
        ))
        .build();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
        .map_err(|e| Error::Model(format!("writing Parquet: {e}")))?;
    w.write(batch)
        .map_err(|e| Error::Model(format!("writing Parquet: {e}")))?;
    w.close()
        .map_err(|e| Error::Model(format!("writing Parquet: {e}")))?;
    Ok(buf)
}

/// Rows of a batch as JSON objects (for `?format=json`).
pub fn to_json_rows(batch: &RecordBatch) -> Vec<Value> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|i| {
            let mut row = serde_json::Map::new();
            for (f, c) in schema.fields().iter().zip(batch.columns()) {
                row.insert(f.name().clone(), cell(c.as_ref(), i));
            }
            Value::Object(row)
        })
        .collect()
}

fn cell(c: &dyn Array, i: usize) -> Value {
    if c.is_null(i) {
        return Value::Null;
    }
    let any = c.as_any();
    if let Some(a) = any.downcast_ref::<Float32Array>() {
        return json!(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return json!(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return json!(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return json!(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return json!(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return json!(a.value(i));
    }
    if let Some(a) = any.downcast_ref::<TimestampMicrosecondArray>() {
        return json!(a.value(i));
    }
    Value::Null
}
