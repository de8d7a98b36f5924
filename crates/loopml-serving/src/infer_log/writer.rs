//! The inference log's writer thread: records grouped by deployment and column layout into Arrow
//! buffers, flushed as Parquet files (by size, age, a reader's request, or close), feedback
//! files beside them.

use super::*;

pub(super) fn base_fields() -> Vec<Field> {
    vec![
        Field::new("request_id", ArrowType::Utf8, false),
        Field::new("row", ArrowType::Int32, false),
        Field::new(
            "timestamp",
            ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("deployment", ArrowType::Utf8, false),
        Field::new("variant", ArrowType::Utf8, false),
        Field::new("model_version", ArrowType::Utf8, false),
        Field::new("shadow", ArrowType::Boolean, false),
        Field::new("status", ArrowType::Int32, false),
        Field::new("latency_us", ArrowType::Int64, false),
        Field::new("error", ArrowType::Utf8, true),
    ]
}

// ---------------------------------------------------------------- writer

/// A typed column being filled.
#[derive(Debug)]
enum Buf {
    F32(Vec<Option<f32>>),
    F64(Vec<Option<f64>>),
    I64(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Str(Vec<Option<String>>),
}

impl Buf {
    fn of(data: &TensorData) -> Self {
        match data {
            TensorData::F32(_) => Buf::F32(Vec::new()),
            TensorData::F64(_) => Buf::F64(Vec::new()),
            TensorData::I64(_) | TensorData::I32(_) | TensorData::U8(_) => Buf::I64(Vec::new()),
            TensorData::Bool(_) => Buf::Bool(Vec::new()),
            TensorData::Bytes(_) => Buf::Str(Vec::new()),
        }
    }

    fn tag(&self) -> char {
        match self {
            Buf::F32(_) => 'f',
            Buf::F64(_) => 'd',
            Buf::I64(_) => 'i',
            Buf::Bool(_) => 'b',
            Buf::Str(_) => 's',
        }
    }

    fn push(&mut self, data: &TensorData, idx: usize) {
        match (self, data) {
            (Buf::F32(v), TensorData::F32(d)) => v.push(d.get(idx).copied()),
            (Buf::F64(v), TensorData::F64(d)) => v.push(d.get(idx).copied()),
            (Buf::I64(v), TensorData::I64(d)) => v.push(d.get(idx).copied()),
            (Buf::I64(v), TensorData::I32(d)) => v.push(d.get(idx).map(|x| i64::from(*x))),
            (Buf::I64(v), TensorData::U8(d)) => v.push(d.get(idx).map(|x| i64::from(*x))),
            (Buf::Bool(v), TensorData::Bool(d)) => v.push(d.get(idx).copied()),
            (Buf::Str(v), TensorData::Bytes(d)) => v.push(d.get(idx).cloned()),
            (b, _) => b.push_null(),
        }
    }

    fn push_null(&mut self) {
        match self {
            Buf::F32(v) => v.push(None),
            Buf::F64(v) => v.push(None),
            Buf::I64(v) => v.push(None),
            Buf::Bool(v) => v.push(None),
            Buf::Str(v) => v.push(None),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Buf::F32(v) => Arc::new(Float32Array::from(std::mem::take(v))),
            Buf::F64(v) => Arc::new(Float64Array::from(std::mem::take(v))),
            Buf::I64(v) => Arc::new(Int64Array::from(std::mem::take(v))),
            Buf::Bool(v) => Arc::new(BooleanArray::from(std::mem::take(v))),
            Buf::Str(v) => Arc::new(StringArray::from(std::mem::take(v))),
        }
    }
}

/// Where a logged column's values are: input (or output) tensor `tensor`, every `width`-th
/// value starting at `offset`.
#[derive(Debug, Clone, Copy)]
struct ColSrc {
    output: bool,
    tensor: usize,
    width: usize,
    offset: usize,
}

impl ColSrc {
    fn data<'a>(&self, r: &'a Record) -> Option<&'a TensorData> {
        if self.output {
            r.outputs
                .as_ref()
                .and_then(|o| o.tensors.get(self.tensor))
                .map(|t| &t.data)
        } else {
            r.inputs.get(self.tensor).map(|t| &t.data)
        }
    }
}

fn rows_of(t: &Tensor) -> usize {
    match t.shape.first() {
        Some(&d) if t.shape.len() > 1 || !t.data.is_empty() => d.max(0) as usize,
        _ => 1,
    }
}

/// Values per row of `t` when it splits into `rows` rows; `None` leaves it out of the log.
fn width_of(t: &Tensor, rows: usize) -> Option<usize> {
    let len = t.data.len();
    if len == 0 || !len.is_multiple_of(rows) || (t.shape.len() > 1 && rows_of(t) != rows) {
        return None;
    }
    Some(len / rows)
}

/// The rows a record expands to.
fn record_rows(r: &Record) -> usize {
    r.inputs
        .first()
        .or_else(|| r.outputs.as_ref().and_then(|o| o.tensors.first()))
        .map_or(1, rows_of)
        .max(1)
}

/// A digest of a record's deployment and column layout (names, types, widths), computed
/// without allocating: records with equal digests go to the same file.
fn fingerprint(r: &Record, rows: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.deployment.hash(&mut h);
    for t in r.inputs.iter() {
        (0u8, &t.name, Buf::of(&t.data).tag(), width_of(t, rows)).hash(&mut h);
    }
    if r.inputs.len() == 1 {
        r.columns.hash(&mut h);
    }
    if let Some(o) = &r.outputs {
        for (t, labels) in o.tensors.iter().zip(&o.labels) {
            (
                1u8,
                &t.name,
                Buf::of(&t.data).tag(),
                width_of(t, rows),
                labels,
            )
                .hash(&mut h);
        }
    }
    h.finish()
}

/// Adds a tensor's per-row columns: `{prefix}{name}` for one value per row, else
/// `{prefix}{names[j]}` or `{prefix}{name}_{j}`. Tensors not split by rows are left out.
fn push_cols(
    t: &Tensor,
    (output, tensor): (bool, usize),
    names: Option<&[String]>,
    prefix: &str,
    rows: usize,
    cols: &mut Vec<(String, ColSrc)>,
) {
    let Some(width) = width_of(t, rows) else {
        return;
    };
    for j in 0..width {
        let name = match (names, width) {
            (Some(n), _) if n.len() == width => format!("{prefix}{}", n[j]),
            (_, 1) => format!("{prefix}{}", t.name),
            _ => format!("{prefix}{}_{j}", t.name),
        };
        cols.push((
            name,
            ColSrc {
                output,
                tensor,
                width,
                offset: j,
            },
        ));
    }
}

/// A record's feature and output columns (built once per file, not per record).
fn layout(r: &Record, rows: usize) -> Vec<(String, ColSrc)> {
    let mut cols = Vec::new();
    let single = r.inputs.len() == 1;
    for (i, t) in r.inputs.iter().enumerate() {
        let names = if single { r.columns.as_deref() } else { None };
        push_cols(t, (false, i), names, "", rows, &mut cols);
    }
    if let Some(o) = &r.outputs {
        for (i, (t, labels)) in o.tensors.iter().zip(&o.labels).enumerate() {
            let names: Option<Vec<String>> = labels
                .as_ref()
                .map(|l| l.iter().map(|x| format!("{}_{x}", t.name)).collect());
            push_cols(t, (true, i), names.as_deref(), "out_", rows, &mut cols);
        }
    }
    cols
}

/// Records of one deployment with one column layout, waiting to be written.
struct Group {
    deployment: String,
    names: Vec<String>,
    srcs: Vec<ColSrc>,
    fixed: Fixed,
    cols: Vec<Buf>,
    rows: usize,
    records: usize,
    first_us: i64,
    last_us: i64,
    since: Instant,
}

/// The columns every record has; strings go straight into Arrow buffers (no allocation per row).
#[derive(Default)]
struct Fixed {
    request_id: StringBuilder,
    row: Vec<i32>,
    ts: Vec<i64>,
    deployment: StringBuilder,
    variant: StringBuilder,
    version: StringBuilder,
    shadow: Vec<bool>,
    status: Vec<i32>,
    latency: Vec<i64>,
    error: StringBuilder,
}

impl Group {
    fn batch(&mut self) -> Result<RecordBatch> {
        let mut f = std::mem::take(&mut self.fixed);
        let mut fields = base_fields();
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(f.request_id.finish()),
            Arc::new(Int32Array::from(f.row)),
            Arc::new(TimestampMicrosecondArray::from(f.ts).with_timezone("UTC")),
            Arc::new(f.deployment.finish()),
            Arc::new(f.variant.finish()),
            Arc::new(f.version.finish()),
            Arc::new(BooleanArray::from(f.shadow)),
            Arc::new(Int32Array::from(f.status)),
            Arc::new(Int64Array::from(f.latency)),
            Arc::new(f.error.finish()),
        ];
        for (name, buf) in self.names.iter().zip(self.cols.iter_mut()) {
            let a = buf.finish();
            // A feature named like a fixed column keeps the fixed one; the feature gets `in_`.
            let name = if fields.iter().any(|x| x.name() == name) {
                format!("in_{name}")
            } else {
                name.clone()
            };
            fields.push(Field::new(name, a.data_type().clone(), true));
            cols.push(a);
        }
        self.rows = 0;
        self.records = 0;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
            .map_err(|e| Error::Model(format!("building a log batch: {e}")))
    }
}

pub(super) struct Writer {
    store: ArtifactStore,
    config: LogConfig,
    stats: Arc<LogStats>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    rt: tokio::runtime::Handle,
    groups: HashMap<u64, Group>,
    feedback: BTreeMap<String, Vec<Feedback>>,
    seq: u64,
    /// This process's part of every file name (replicas share one store).
    writer: String,
}

impl Writer {
    /// A writer of `store`'s inference log, answering on `rt` (not started: see `run`).
    pub(super) fn new(
        store: ArtifactStore,
        config: LogConfig,
        stats: Arc<LogStats>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Self {
            store,
            config,
            stats,
            metrics,
            rt,
            groups: HashMap::new(),
            feedback: BTreeMap::new(),
            seq: 0,
            writer: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        }
    }

    /// Wakes every [`POLL`] (or when a reader or `close` unparks it), drains the queue, writes
    /// what is due. Senders never wake it: handing over a record costs no system call.
    pub(super) fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            std::thread::park_timeout(POLL);
            let mut acks = Vec::new();
            let closed = loop {
                match rx.try_recv() {
                    Ok(Msg::Flush(ack)) => acks.push(ack),
                    Ok(m) => self.handle_queued(m),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if closed || !acks.is_empty() {
                let res = self.flush(true);
                for ack in acks {
                    let _ = ack.send(
                        res.as_ref()
                            .copied()
                            .map_err(|e| Error::Model(e.to_string())),
                    );
                }
                if closed {
                    return;
                }
            } else {
                let _ = self.flush(false);
            }
        }
    }

    fn handle_queued(&mut self, m: Msg) {
        match m {
            Msg::Record(r) => self.add(&r),
            Msg::Feedback(f) => self
                .feedback
                .entry(f.deployment.clone())
                .or_default()
                .push(f),
            Msg::Flush(ack) => {
                let _ = ack.send(Ok(()));
            }
        }
    }

    fn add(&mut self, r: &Record) {
        let rows = record_rows(r);
        let key = fingerprint(r, rows);
        let g = self.groups.entry(key).or_insert_with(|| {
            let (names, srcs): (Vec<String>, Vec<ColSrc>) = layout(r, rows).into_iter().unzip();
            let cols = srcs
                .iter()
                .map(|c| c.data(r).map_or(Buf::F64(Vec::new()), Buf::of))
                .collect();
            Group {
                deployment: r.deployment.clone(),
                names,
                srcs,
                fixed: Fixed::default(),
                cols,
                rows: 0,
                records: 0,
                first_us: r.timestamp_us,
                last_us: r.timestamp_us,
                since: Instant::now(),
            }
        });
        if g.rows == 0 {
            g.first_us = r.timestamp_us;
            g.last_us = r.timestamp_us;
            g.since = Instant::now();
        }
        g.first_us = g.first_us.min(r.timestamp_us);
        g.last_us = g.last_us.max(r.timestamp_us);
        let f = &mut g.fixed;
        for i in 0..rows {
            f.request_id.append_value(&r.request_id);
            f.row.push(i32::try_from(i).unwrap_or(i32::MAX));
            f.ts.push(r.timestamp_us);
            f.deployment.append_value(&r.deployment);
            f.variant.append_value(&r.variant);
            f.version.append_value(&r.model_version);
            f.shadow.push(r.shadow);
            f.status.push(i32::from(r.status));
            f.latency.push(r.latency_us);
            f.error.append_option(r.error.as_deref());
        }
        for (src, buf) in g.srcs.iter().zip(g.cols.iter_mut()) {
            match src.data(r) {
                Some(data) => {
                    for i in 0..rows {
                        buf.push(data, i * src.width + src.offset);
                    }
                }
                None => (0..rows).for_each(|_| buf.push_null()),
            }
        }
        g.rows += rows;
        g.records += 1;
        if g.rows >= self.config.flush_rows {
            let _ = self.flush(false);
        }
    }

    /// Writes groups that are due (all of them when `all`); a failed write keeps nothing
    /// half-done: the group's batch is retried at the next flush.
    fn flush(&mut self, all: bool) -> Result<()> {
        let mut first_err = None;
        let due: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.rows > 0
                    && (all
                        || g.rows >= self.config.flush_rows
                        || g.since.elapsed() >= self.config.flush_interval)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(mut g) = self.groups.remove(&key) else {
                continue;
            };
            let records = g.records as u64;
            let (first, last, dep) = (g.first_us, g.last_us, g.deployment.clone());
            let res = g
                .batch()
                .and_then(|b| self.write(&dep, false, first, last, &b));
            match res {
                Ok(()) => {
                    self.stats.written.fetch_add(records, Ordering::Relaxed);
                    if let Some(m) = &self.metrics {
                        m.log_written(records);
                    }
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(deployment = %dep, error = %e, "inference-log write failed; records lost");
                    first_err.get_or_insert(e);
                }
            }
        }
        let fbs = std::mem::take(&mut self.feedback);
        for (dep, items) in fbs {
            if items.is_empty() {
                continue;
            }
            if let Err(e) = self.write_feedback(&dep, &items) {
                tracing::warn!(deployment = %dep, error = %e, "feedback write failed; will retry");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.feedback.entry(dep).or_default().extend(items);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn write_feedback(&mut self, dep: &str, items: &[Feedback]) -> Result<()> {
        let first = items.iter().map(|f| f.timestamp_us).min().unwrap_or(0);
        let last = items.iter().map(|f| f.timestamp_us).max().unwrap_or(0);
        let schema = Arc::new(Schema::new(vec![
            Field::new("request_id", ArrowType::Utf8, false),
            Field::new(
                "timestamp",
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("variant", ArrowType::Utf8, true),
            Field::new("truth", ArrowType::Utf8, true),
            Field::new("reward", ArrowType::Float64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                items.iter().map(|f| f.request_id.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(items.iter().map(|f| f.timestamp_us))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter(
                items.iter().map(|f| f.variant.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                items.iter().map(|f| f.truth.as_deref()),
            )),
            Arc::new(Float64Array::from_iter(items.iter().map(|f| f.reward))),
        ];
        let b = RecordBatch::try_new(schema, cols)
            .map_err(|e| Error::Model(format!("building feedback batch: {e}")))?;
        self.write(dep, true, first, last, &b)
    }

    fn write(
        &mut self,
        dep: &str,
        feedback: bool,
        first: i64,
        last: i64,
        b: &RecordBatch,
    ) -> Result<()> {
        let bytes = to_parquet(b)?;
        self.seq += 1;
        let dir = dir_of(dep, feedback)?;
        let name = ArtifactPath::parse(&format!(
            "{first}-{last}-{}-{}.parquet",
            self.seq, self.writer
        ))
        .map_err(|e| Error::Model(e.to_string()))?;
        let path = dir.join(&name);
        let store = self.store.clone();
        let body =
            futures::stream::once(
                async move { Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)) },
            );
        self.rt
            .block_on(store.put(&path, Box::pin(body)))
            .map_err(|e| Error::Model(format!("writing {path}: {e}")))?;
        self.stats.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
