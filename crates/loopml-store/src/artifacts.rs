//! Artifact storage behind `object_store`: a local folder by default, or an S3-compatible
//! bucket, Google Cloud Storage or Azure Blob (`s3://bucket/prefix`, `gs://…`, `az://…`), with
//! credentials, region and endpoint from the provider's usual environment variables. Every path
//! a user sends is parsed into an [`ArtifactPath`] first, which rejects `..`, absolute paths and
//! other escapes; on the local backend, symlinks that leave the root are rejected too. Bodies
//! are streamed in both directions, so a 1 GB artifact never sits in memory. Multipart uploads
//! driven by a client ([`ArtifactStore::create_upload`]) use the object store's own multipart
//! API, and staged part files on the local backend.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use crate::StoreError;

/// A stream of artifact bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Chunk size of streamed uploads.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// Read size of local downloads: large enough that a 1 GB file is ~1000 blocking reads.
const DOWNLOAD_CHUNK: usize = 1024 * 1024;

/// Most parts a client-driven multipart upload may have (S3's limit).
pub const MAX_UPLOAD_PARTS: u32 = 10_000;

/// A byte range of a read, as an HTTP `Range: bytes=…` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`: from `a` to `b`, both included.
    Bounded(u64, u64),
    /// `bytes=a-`: from `a` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses one `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`); `None` for a form
    /// this store does not serve (other units, several ranges), which HTTP lets a server answer
    /// with the whole body.
    pub fn parse_header(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (true, false) => b.parse().ok().map(ByteRange::Suffix),
            (false, true) => a.parse().ok().map(ByteRange::From),
            (false, false) => {
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                (a <= b).then_some(ByteRange::Bounded(a, b))
            }
            (true, true) => None,
        }
    }

    /// The half-open span of a `size`-byte file this range covers, or `None` when it covers
    /// nothing (HTTP 416).
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        let span = match self {
            ByteRange::Bounded(a, b) => a..b.saturating_add(1).min(size),
            ByteRange::From(a) => a..size,
            ByteRange::Suffix(n) => size.saturating_sub(n)..size,
        };
        (span.start < span.end).then_some(span)
    }
}

/// A read of part or all of an artifact.
pub struct ArtifactRead {
    /// Size of the whole file.
    pub size: u64,
    /// The span served (all of it without a range).
    pub span: std::ops::Range<u64>,
    /// The bytes of `span`.
    pub body: ByteStream,
}

/// Streams `range` of a local file (all of it for `None`) in large chunks (object_store's local
/// reader uses 8 KiB chunks, each a blocking-pool round trip, which caps downloads far below
/// disk speed).
async fn local_file_range(
    full: PathBuf,
    path: &ArtifactPath,
    range: Option<ByteRange>,
) -> Result<(u64, std::ops::Range<u64>, ByteStream), StoreError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(&full).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::ArtifactNotFound(path.to_string()));
        }
        Err(e) => return Err(StoreError::Artifact(format!("cannot open '{path}': {e}"))),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| StoreError::Artifact(format!("cannot stat '{path}': {e}")))?
        .len();
    let span = match range {
        None => 0..size,
        Some(r) => r
            .resolve(size)
            .ok_or(StoreError::RangeNotSatisfiable(size))?,
    };
    if span.start > 0 {
        file.seek(std::io::SeekFrom::Start(span.start))
            .await
            .map_err(|e| StoreError::Artifact(format!("cannot seek in '{path}': {e}")))?;
    }
    let left = span.end - span.start;
    let stream = futures::stream::try_unfold((file, left), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = DOWNLOAD_CHUNK.min(usize::try_from(left).unwrap_or(DOWNLOAD_CHUNK));
        let mut buf = bytes::BytesMut::with_capacity(want);
        while buf.len() < want {
            let n = (&mut file)
                .take((want - buf.len()) as u64)
                .read_buf(&mut buf)
                .await
                .map_err(|e| StoreError::Artifact(format!("read failed: {e}")))?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            Ok(None)
        } else {
            let n = buf.len() as u64;
            Ok(Some((buf.freeze(), (file, left - n))))
        }
    })
    .boxed();
    Ok((size, span, stream))
}

/// A normalised, relative artifact path (`/`-separated, no `.`/`..`, never absolute).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactPath(String);

impl ArtifactPath {
    /// The root of the artifact store.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses a user-supplied relative path, rejecting anything that could escape the root.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::InvalidPath(format!("'{raw}' {why}"));
        if raw.starts_with('/') || raw.starts_with('\\') {
            return Err(bad("is absolute; artifact paths must be relative"));
        }
        if raw.contains('\0') || raw.contains('\\') {
            return Err(bad("contains a NUL byte or a backslash"));
        }
        if raw.len() >= 2 && raw.as_bytes()[1] == b':' && raw.as_bytes()[0].is_ascii_alphabetic() {
            return Err(bad("looks like a Windows drive path"));
        }
        let mut parts = Vec::new();
        for seg in raw.split('/') {
            match seg {
                "" | "." => continue,
                ".." => return Err(bad("contains '..'")),
                s => parts.push(s),
            }
        }
        Ok(Self(parts.join("/")))
    }

    /// The path as a `/`-separated string (empty for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends another relative path.
    pub fn join(&self, other: &ArtifactPath) -> ArtifactPath {
        match (self.is_root(), other.is_root()) {
            (true, _) => other.clone(),
            (_, true) => self.clone(),
            _ => ArtifactPath(format!("{}/{}", self.0, other.0)),
        }
    }

    /// Last segment (file name).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }
}

impl std::fmt::Display for ArtifactPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEntry {
    /// Path relative to the listed directory's root (its base name).
    pub name: String,
    /// True for directories.
    pub is_dir: bool,
    /// Size in bytes, for files.
    pub size: Option<u64>,
}

/// How client-driven multipart uploads are kept until they complete.
#[derive(Clone)]
enum Uploads {
    /// The object store's own multipart API (S3, GCS, Azure).
    Native(Arc<dyn MultipartStore>),
    /// Part files in a staging folder beside the local root, joined on completion.
    Staged(PathBuf),
}

/// The artifact store.
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// Canonical root on disk, for the local backend (symlink confinement).
    local_root: Option<PathBuf>,
    /// Key prefix inside the bucket (`prefix` of `s3://bucket/prefix`); empty for none.
    prefix: String,
    /// The destination as configured, for messages.
    url: String,
    uploads: Uploads,
    /// Signs direct URLs to the object store (S3, GCS, Azure); `None` on the local backend.
    signer: Option<Arc<dyn Signer>>,
    /// Whether download URLs handed to clients point straight at the bucket.
    direct_downloads: bool,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("url", &self.url)
            .field("local_root", &self.local_root)
            .finish()
    }
}

/// How long an unfinished local upload's parts are kept (a client that died mid-upload never
/// aborts it). S3 users set a lifecycle rule for the same purpose.
const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes local uploads untouched for [`ABANDONED_UPLOAD_AGE`].
fn sweep_abandoned_uploads(staging: &FsPath) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ABANDONED_UPLOAD_AGE);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// True when an endpoint is plain HTTP (a local S3-compatible server), which the client
/// refuses unless told to allow it.
fn plain_http_endpoint(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|e| e.trim_start().to_ascii_lowercase().starts_with("http://"))
}

impl ArtifactStore {
    /// Opens the artifact destination `dest`: a folder path or `file://` URL (the local
    /// backend), `s3://bucket[/prefix]` (also `s3a://`; any S3-compatible server through
    /// `AWS_ENDPOINT_URL` or MLflow's `MLFLOW_S3_ENDPOINT_URL`), `gs://bucket[/prefix]` or
    /// `az://container[/prefix]` (also `abfs[s]://`, `azure://`). Credentials and region come
    /// from the provider's usual environment variables. Nothing is contacted yet; see
    /// [`ArtifactStore::check`].
    pub fn open(dest: &str) -> Result<Self, StoreError> {
        let Some((scheme, rest)) = dest.split_once("://") else {
            return Self::local(dest);
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            return Self::local(rest);
        }
        let bad = |why: String| {
            StoreError::InvalidConfig(format!("artifact destination '{dest}': {why}"))
        };
        let url = url::Url::parse(dest).map_err(|e| bad(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("names no bucket or container".into()));
        }
        // From the text as written: URL parsing would quietly fold a `..` away.
        let raw_path = rest.split_once('/').map_or("", |(_, p)| p);
        let raw_path = raw_path.split(['?', '#']).next().unwrap_or("");
        let prefix = ArtifactPath::parse(raw_path)
            .map_err(|e| bad(e.to_string()))?
            .to_string();
        let build_err = |e: object_store::Error| bad(e.to_string());
        let (store, uploads, signer): (
            Arc<dyn ObjectStore>,
            Arc<dyn MultipartStore>,
            Arc<dyn Signer>,
        ) = match scheme.as_str() {
            "s3" | "s3a" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env().with_url(dest);
                if b.get_config_value(&AmazonS3ConfigKey::Endpoint).is_none()
                    && let Ok(e) = std::env::var("MLFLOW_S3_ENDPOINT_URL")
                    && !e.trim().is_empty()
                {
                    b = b.with_endpoint(e.trim());
                }
                if plain_http_endpoint(b.get_config_value(&AmazonS3ConfigKey::Endpoint).as_deref())
                {
                    b = b.with_allow_http(true);
                }
                let s3 = Arc::new(b.build().map_err(build_err)?);
                (s3.clone(), s3.clone(), s3)
            }
            "gs" => {
                use object_store::gcp::GoogleCloudStorageBuilder;
                let gcs = Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_url(dest)
                        .build()
                        .map_err(build_err)?,
                );
                (gcs.clone(), gcs.clone(), gcs)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                use object_store::azure::MicrosoftAzureBuilder;
                let az = Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_url(dest)
                        .build()
                        .map_err(build_err)?,
                );
                (az.clone(), az.clone(), az)
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme '{other}': use a folder, file://, s3://, gs:// or az://"
                )));
            }
        };
        Ok(Self {
            store,
            local_root: None,
            prefix,
            url: dest.to_string(),
            uploads: Uploads::Native(uploads),
            signer: Some(signer),
            direct_downloads: false,
        })
    }

    /// Contacts the store once (a listing of the prefix), so a wrong bucket, endpoint or
    /// credential is reported at start-up rather than on the first upload.
    pub async fn check(&self) -> Result<(), StoreError> {
        if self.local_root.is_some() {
            return Ok(());
        }
        let prefix = self.key(&ArtifactPath::root())?;
        let prefix = (!self.prefix.is_empty()).then_some(prefix);
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Artifact(format!("{}: {e}", self.url)))
    }

    /// True for the local-folder backend.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The object key of `path`, under the configured prefix.
    fn key(&self, path: &ArtifactPath) -> Result<ObjPath, StoreError> {
        let full = match (self.prefix.is_empty(), path.is_root()) {
            (true, _) => path.as_str().to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, path.as_str()),
        };
        ObjPath::parse(&full).map_err(|e| StoreError::InvalidPath(e.to_string()))
    }

    /// A store rooted at a local folder (created if missing).
    pub fn local(root: impl AsRef<FsPath>) -> Result<Self, StoreError> {
        let root = root.as_ref();
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::Artifact(format!("cannot create {}: {e}", root.display())))?;
        let canon = root
            .canonicalize()
            .map_err(|e| StoreError::Artifact(format!("cannot resolve {}: {e}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&canon)?;
        let name = canon
            .file_name()
            .map_or_else(|| "artifacts".into(), |n| n.to_string_lossy().into_owned());
        let staging = canon.with_file_name(format!(".{name}-uploads"));
        Ok(Self {
            store: Arc::new(fs),
            url: canon.display().to_string(),
            local_root: Some(canon),
            prefix: String::new(),
            uploads: Uploads::Staged(staging),
            signer: None,
            direct_downloads: false,
        })
    }

    /// Human description of where artifacts live.
    pub fn describe(&self) -> String {
        self.url.clone()
    }

    /// On the local backend, rejects a path whose existing part resolves outside the root
    /// through a symlink.
    fn confine(&self, path: &ArtifactPath) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut cur = root.clone();
        for seg in path.as_str().split('/').filter(|s| !s.is_empty()) {
            cur.push(seg);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = cur.canonicalize().map_err(|_| {
                        StoreError::InvalidPath(format!("'{path}' goes through a broken symlink"))
                    })?;
                    if !target.starts_with(root) {
                        return Err(StoreError::InvalidPath(format!(
                            "'{path}' escapes the artifact root through a symlink"
                        )));
                    }
                }
                Ok(_) => {}
                Err(_) => break, // the rest does not exist yet
            }
        }
        Ok(())
    }

    /// Streams `body` into `path`, replacing any previous file; returns the bytes written.
    /// The file becomes visible only once complete.
    pub async fn put<S, E>(&self, path: &ArtifactPath, mut body: S) -> Result<u64, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        if path.is_root() {
            return Err(StoreError::InvalidPath(
                "an artifact file needs a name".into(),
            ));
        }
        self.confine(path)?;
        let loc = self.key(path)?;
        // A body that fits one chunk goes up in a single PUT (one request to an object store
        // instead of create + part + complete); a larger one streams as a multipart upload.
        let mut head: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        let mut more = false;
        while let Some(chunk) = body.next().await {
            let bytes =
                chunk.map_err(|e| StoreError::Artifact(format!("upload interrupted: {e}")))?;
            buffered += bytes.len();
            head.push(bytes);
            if buffered > UPLOAD_CHUNK {
                more = true;
                break;
            }
        }
        if !more {
            let payload: PutPayload = head.into_iter().collect();
            self.store.put(&loc, payload).await?;
            return Ok(buffered as u64);
        }
        let upload = self.store.put_multipart(&loc).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
        let mut total = 0u64;
        for bytes in head {
            total += bytes.len() as u64;
            writer.write(&bytes);
        }
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    if let Err(e) = writer.wait_for_capacity(2).await {
                        return Err(e.into());
                    }
                    writer.write(&bytes);
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StoreError::Artifact(format!("upload interrupted: {e}")));
                }
            }
        }
        writer.finish().await?;
        Ok(total)
    }

    /// The existing file at `path` on disk, on the local backend (`None` on object stores, which
    /// callers then stream with [`ArtifactStore::get`]).
    pub fn local_file(&self, path: &ArtifactPath) -> Result<Option<PathBuf>, StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        self.confine(path)?;
        let full = root.join(path.as_str());
        if path.is_root() || !full.is_file() {
            return Err(StoreError::ArtifactNotFound(path.to_string()));
        }
        Ok(Some(full))
    }

    /// Opens `path` for streaming; returns its size and its bytes.
    pub async fn get(&self, path: &ArtifactPath) -> Result<(u64, ByteStream), StoreError> {
        if path.is_root() {
            return Err(StoreError::ArtifactNotFound(String::new()));
        }
        self.confine(path)?;
        if let Some(root) = &self.local_root
            && root.join(path.as_str()).is_dir()
        {
            return Err(StoreError::ArtifactNotFound(path.to_string()));
        }
        if let Some(root) = &self.local_root {
            let (size, _, body) = local_file_range(root.join(path.as_str()), path, None).await?;
            return Ok((size, body));
        }
        let loc = self.key(path)?;
        let res = self.store.get(&loc).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::ArtifactNotFound(path.to_string()),
            other => other.into(),
        })?;
        let size = res.meta.size;
        let stream = res
            .into_stream()
            .map(|r| r.map_err(StoreError::from))
            .boxed();
        Ok((size, stream))
    }

    /// Lists one level under `dir`. A missing directory, or a file, lists as empty.
    pub async fn list(&self, dir: &ArtifactPath) -> Result<Vec<ArtifactEntry>, StoreError> {
        self.confine(dir)?;
        if let Some(root) = &self.local_root {
            let full = root.join(dir.as_str());
            if !full.is_dir() {
                return Ok(Vec::new());
            }
        }
        let prefix = if dir.is_root() && self.prefix.is_empty() {
            None
        } else {
            Some(self.key(dir)?)
        };
        let listing = match self.store.list_with_delimiter(prefix.as_ref()).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(listing.objects.len() + listing.common_prefixes.len());
        for p in listing.common_prefixes {
            if let Some(name) = p.filename() {
                out.push(ArtifactEntry {
                    name: name.to_string(),
                    is_dir: true,
                    size: None,
                });
            }
        }
        for o in listing.objects {
            if let Some(name) = o.location.filename() {
                out.push(ArtifactEntry {
                    name: name.to_string(),
                    is_dir: false,
                    size: Some(o.size),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a file, or a directory and everything under it.
    pub async fn delete(&self, path: &ArtifactPath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::InvalidPath(
                "refusing to delete the artifact root".into(),
            ));
        }
        self.confine(path)?;
        let loc = self.key(path)?;
        let mut found = false;
        if let Some(root) = &self.local_root {
            let full = root.join(path.as_str());
            if full.is_file() {
                self.store.delete(&loc).await?;
                return Ok(());
            }
            if full.is_dir() {
                tokio::fs::remove_dir_all(&full)
                    .await
                    .map_err(|e| StoreError::Artifact(format!("cannot delete '{path}': {e}")))?;
                return Ok(());
            }
            return Err(StoreError::ArtifactNotFound(path.to_string()));
        }
        // An object store answers a delete of a missing key with success, so look first: the
        // key itself (a file), then everything under it (a directory), deleted in bulk.
        match self.store.head(&loc).await {
            Ok(_) => {
                self.store.delete(&loc).await?;
                found = true;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut victims = Vec::new();
        let mut listing = self.store.list(Some(&loc));
        while let Some(meta) = listing.next().await {
            victims.push(meta?.location);
        }
        drop(listing);
        if !victims.is_empty() {
            found = true;
            let paths = futures::stream::iter(victims.into_iter().map(Ok)).boxed();
            let mut deleted = self.store.delete_stream(paths);
            while let Some(r) = deleted.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(StoreError::ArtifactNotFound(path.to_string()))
        }
    }

    /// Reads `range` of the file at `path` (all of it for `None`); a range past the end is
    /// [`StoreError::RangeNotSatisfiable`].
    pub async fn get_range(
        &self,
        path: &ArtifactPath,
        range: Option<ByteRange>,
    ) -> Result<ArtifactRead, StoreError> {
        let Some(range) = range else {
            let (size, body) = self.get(path).await?;
            return Ok(ArtifactRead {
                size,
                span: 0..size,
                body,
            });
        };
        if path.is_root() {
            return Err(StoreError::ArtifactNotFound(String::new()));
        }
        self.confine(path)?;
        if let Some(root) = &self.local_root {
            let full = root.join(path.as_str());
            if full.is_dir() {
                return Err(StoreError::ArtifactNotFound(path.to_string()));
            }
            let (size, span, body) = local_file_range(full, path, Some(range)).await?;
            return Ok(ArtifactRead { size, span, body });
        }
        let loc = self.key(path)?;
        let not_found = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => StoreError::ArtifactNotFound(path.to_string()),
            other => other.into(),
        };
        let size = self.store.head(&loc).await.map_err(not_found)?.size;
        let span = range
            .resolve(size)
            .ok_or(StoreError::RangeNotSatisfiable(size))?;
        let res = self
            .store
            .get_opts(
                &loc,
                GetOptions {
                    range: Some(GetRange::Bounded(span.clone())),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(not_found)?;
        let body = res
            .into_stream()
            .map(|r| r.map_err(StoreError::from))
            .boxed();
        Ok(ArtifactRead { size, span, body })
    }

    /// Size of the file at `path`.
    pub async fn size(&self, path: &ArtifactPath) -> Result<u64, StoreError> {
        if path.is_root() {
            return Err(StoreError::ArtifactNotFound(String::new()));
        }
        self.confine(path)?;
        if let Some(root) = &self.local_root {
            return match std::fs::metadata(root.join(path.as_str())) {
                Ok(m) if m.is_file() => Ok(m.len()),
                _ => Err(StoreError::ArtifactNotFound(path.to_string())),
            };
        }
        match self.store.head(&self.key(path)?).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StoreError::ArtifactNotFound(path.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Hands clients URLs signed for the bucket itself (`true`), so large downloads bypass
    /// the server; off by default, since clients outside the cluster often cannot reach the
    /// bucket. No effect on the local backend.
    pub fn with_direct_downloads(mut self, on: bool) -> Self {
        self.direct_downloads = on;
        self
    }

    /// A URL that reads `path` straight from the object store for `ttl`, signed with the
    /// store's credentials; `None` on the local backend or with direct downloads off.
    pub async fn direct_get_url(
        &self,
        path: &ArtifactPath,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let Some(signer) = self.signer.as_ref().filter(|_| self.direct_downloads) else {
            return Ok(None);
        };
        let url = signer
            .signed_url(http::Method::GET, &self.key(path)?, ttl)
            .await?;
        Ok(Some(url.to_string()))
    }

    /// Every file under `dir`, recursively, as paths relative to `dir` with their sizes.
    pub async fn walk(&self, dir: &ArtifactPath) -> Result<Vec<(ArtifactPath, u64)>, StoreError> {
        self.confine(dir)?;
        let base = self.key(dir)?;
        let base_parts = base.parts().count();
        let prefix = (!(dir.is_root() && self.prefix.is_empty())).then_some(base);
        let mut out = Vec::new();
        let mut listing = self.store.list(prefix.as_ref());
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let rel: Vec<String> = meta
                .location
                .parts()
                .skip(base_parts)
                .map(|p| p.as_ref().to_string())
                .collect();
            if rel.is_empty() {
                continue;
            }
            out.push((ArtifactPath::parse(&rel.join("/"))?, meta.size));
        }
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(out)
    }

    /// Copies the folder `dir` of the store into the local folder `dest` (created; files
    /// written whole, then renamed into place).
    pub async fn download_dir(&self, dir: &ArtifactPath, dest: &FsPath) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let files = self.walk(dir).await?;
        if files.is_empty() {
            return Err(StoreError::ArtifactNotFound(dir.to_string()));
        }
        let mut total = 0;
        for (rel, _) in files {
            let target = dest.join(rel.as_str());
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| {
                    StoreError::Artifact(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let part = target.with_extension("part");
            let mut out = tokio::fs::File::create(&part).await.map_err(|e| {
                StoreError::Artifact(format!("cannot create {}: {e}", part.display()))
            })?;
            let (_, mut body) = self.get(&dir.join(&rel)).await?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                out.write_all(&chunk).await.map_err(|e| {
                    StoreError::Artifact(format!("cannot write {}: {e}", part.display()))
                })?;
            }
            out.flush().await.map_err(|e| {
                StoreError::Artifact(format!("cannot write {}: {e}", part.display()))
            })?;
            drop(out);
            tokio::fs::rename(&part, &target).await.map_err(|e| {
                StoreError::Artifact(format!("cannot rename {}: {e}", part.display()))
            })?;
        }
        Ok(total)
    }

    // ------------------------------------------------------------ client-driven multipart

    /// Starts a multipart upload of `path` whose parts the client sends one by one (MLflow's
    /// `mpu/create`); returns the upload id to name in every later call.
    pub async fn create_upload(&self, path: &ArtifactPath) -> Result<String, StoreError> {
        if path.is_root() {
            return Err(StoreError::InvalidPath(
                "an artifact file needs a name".into(),
            ));
        }
        self.confine(path)?;
        match &self.uploads {
            Uploads::Native(m) => Ok(m.create_multipart(&self.key(path)?).await?),
            Uploads::Staged(staging) => {
                sweep_abandoned_uploads(staging);
                let id = uuid::Uuid::new_v4().simple().to_string();
                let dir = staging.join(&id);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StoreError::Artifact(format!("cannot create {}: {e}", dir.display()))
                })?;
                std::fs::write(dir.join("target"), path.as_str()).map_err(|e| {
                    StoreError::Artifact(format!("cannot write {}: {e}", dir.display()))
                })?;
                Ok(id)
            }
        }
    }

    /// The staging folder of a local upload, checked to belong to `path`.
    fn staged_upload(
        staging: &FsPath,
        path: &ArtifactPath,
        id: &str,
    ) -> Result<PathBuf, StoreError> {
        let unknown = || StoreError::ArtifactNotFound(format!("upload '{id}' of '{path}'"));
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let dir = staging.join(id);
        match std::fs::read_to_string(dir.join("target")) {
            Ok(t) if t == path.as_str() => Ok(dir),
            _ => Err(unknown()),
        }
    }

    /// Stores part `part_number` (1-based) of upload `id`; returns its ETag, which the
    /// completion must name.
    pub async fn put_upload_part(
        &self,
        path: &ArtifactPath,
        id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<String, StoreError> {
        if !(1..=MAX_UPLOAD_PARTS).contains(&part_number) {
            return Err(StoreError::InvalidPath(format!(
                "part_number must be between 1 and {MAX_UPLOAD_PARTS}, got {part_number}"
            )));
        }
        self.confine(path)?;
        match &self.uploads {
            Uploads::Native(m) => {
                let part = m
                    .put_part(
                        &self.key(path)?,
                        &id.to_string(),
                        part_number as usize - 1,
                        PutPayload::from_bytes(data),
                    )
                    .await?;
                Ok(part.content_id)
            }
            Uploads::Staged(staging) => {
                let dir = Self::staged_upload(staging, path, id)?;
                let len = data.len();
                let file = dir.join(format!("{part_number:05}"));
                let tmp = dir.join(format!(
                    "{part_number:05}.{}",
                    uuid::Uuid::new_v4().simple()
                ));
                tokio::fs::write(&tmp, &data).await.map_err(|e| {
                    StoreError::Artifact(format!("cannot write part {part_number}: {e}"))
                })?;
                tokio::fs::rename(&tmp, &file).await.map_err(|e| {
                    StoreError::Artifact(format!("cannot write part {part_number}: {e}"))
                })?;
                Ok(format!("\"{part_number}-{len}\""))
            }
        }
    }

    /// Joins the parts of upload `id` into the file at `path`: `parts` are (part number, ETag)
    /// and must be 1, 2, … N without gaps, each ETag the one its upload returned.
    pub async fn complete_upload(
        &self,
        path: &ArtifactPath,
        id: &str,
        mut parts: Vec<(u32, String)>,
    ) -> Result<(), StoreError> {
        parts.sort_by_key(|p| p.0);
        if parts.is_empty() {
            return Err(StoreError::InvalidPath(
                "a multipart upload needs at least one part".into(),
            ));
        }
        for (i, (n, _)) in parts.iter().enumerate() {
            if *n as usize != i + 1 {
                return Err(StoreError::InvalidPath(format!(
                    "parts must be numbered 1..{} without gaps or repeats; part {} is missing",
                    parts.len(),
                    i + 1
                )));
            }
        }
        self.confine(path)?;
        match &self.uploads {
            Uploads::Native(m) => {
                let ids = parts
                    .into_iter()
                    .map(|(_, etag)| PartId { content_id: etag })
                    .collect();
                m.complete_multipart(&self.key(path)?, &id.to_string(), ids)
                    .await?;
                Ok(())
            }
            Uploads::Staged(staging) => {
                let dir = Self::staged_upload(staging, path, id)?;
                let mut files = Vec::with_capacity(parts.len());
                for (n, etag) in &parts {
                    let file = dir.join(format!("{n:05}"));
                    let len = std::fs::metadata(&file)
                        .map_err(|_| {
                            StoreError::InvalidPath(format!("part {n} was never uploaded"))
                        })?
                        .len();
                    if etag.trim_matches('"') != format!("{n}-{len}") {
                        return Err(StoreError::InvalidPath(format!(
                            "part {n}: ETag {etag} does not match the uploaded part"
                        )));
                    }
                    files.push(file);
                }
                let body = futures::stream::iter(files)
                    .then(|f| async move { tokio::fs::read(&f).await.map(Bytes::from) })
                    .map(|r| r.map_err(|e| e.to_string()))
                    .boxed();
                self.put(path, body).await?;
                let _ = tokio::fs::remove_dir_all(&dir).await;
                Ok(())
            }
        }
    }

    /// Abandons upload `id` and frees its parts.
    pub async fn abort_upload(&self, path: &ArtifactPath, id: &str) -> Result<(), StoreError> {
        self.confine(path)?;
        match &self.uploads {
            Uploads::Native(m) => Ok(m.abort_multipart(&self.key(path)?, &id.to_string()).await?),
            Uploads::Staged(staging) => {
                let dir = Self::staged_upload(staging, path, id)?;
                tokio::fs::remove_dir_all(&dir)
                    .await
                    .map_err(|e| StoreError::Artifact(format!("cannot abort upload '{id}': {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_escapes() {
        for bad in ["../x", "a/../../b", "/etc/passwd", "a\\b", "C:/x", "a/\0"] {
            assert!(ArtifactPath::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(ArtifactPath::parse("a//b/./c/").unwrap().as_str(), "a/b/c");
        assert!(ArtifactPath::parse("").unwrap().is_root());
    }

    fn body(
        parts: Vec<&'static [u8]>,
    ) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let p = ArtifactPath::parse("1/run/artifacts/sub/x.txt").unwrap();
        let n = store
            .put(&p, body(vec![b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(n, 11);
        let (size, mut s) = store.get(&p).await.unwrap();
        assert_eq!(size, 11);
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"hello world");
        let l = store
            .list(&ArtifactPath::parse("1/run/artifacts").unwrap())
            .await
            .unwrap();
        assert_eq!(
            l,
            vec![ArtifactEntry {
                name: "sub".into(),
                is_dir: true,
                size: None
            }]
        );
        assert!(
            store.list(&p).await.unwrap().is_empty(),
            "a file lists as empty"
        );
        assert!(
            store
                .list(&ArtifactPath::parse("nope").unwrap())
                .await
                .unwrap()
                .is_empty()
        );
        store
            .delete(&ArtifactPath::parse("1/run").unwrap())
            .await
            .unwrap();
        assert!(matches!(
            store.get(&p).await,
            Err(StoreError::ArtifactNotFound(_))
        ));
    }

    #[test]
    fn byte_ranges_parse_and_resolve() {
        assert_eq!(
            ByteRange::parse_header("bytes=0-9"),
            Some(ByteRange::Bounded(0, 9))
        );
        assert_eq!(
            ByteRange::parse_header("bytes=5-"),
            Some(ByteRange::From(5))
        );
        assert_eq!(
            ByteRange::parse_header("bytes=-3"),
            Some(ByteRange::Suffix(3))
        );
        for unserved in [
            "bytes=9-1",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "",
        ] {
            assert_eq!(ByteRange::parse_header(unserved), None, "{unserved}");
        }
        assert_eq!(ByteRange::Bounded(0, 9).resolve(5), Some(0..5));
        assert_eq!(ByteRange::Bounded(2, 3).resolve(5), Some(2..4));
        assert_eq!(ByteRange::From(5).resolve(5), None);
        assert_eq!(ByteRange::Suffix(10).resolve(5), Some(0..5));
        assert_eq!(ByteRange::Suffix(0).resolve(5), None);
    }

    #[test]
    fn destinations_parse_or_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let local = format!("file://{}", dir.path().join("a").display());
        assert!(ArtifactStore::open(&local).unwrap().is_local());
        let s3 = ArtifactStore::open("s3://bucket/some/prefix").unwrap();
        assert!(!s3.is_local());
        assert_eq!(
            s3.key(&ArtifactPath::parse("x/y").unwrap())
                .unwrap()
                .as_ref(),
            "some/prefix/x/y"
        );
        for (bad, why) in [
            ("ftp://host/x", "unsupported scheme"),
            ("s3:///nobucket", "names no bucket"),
            ("s3://bucket/../x", "'..'"),
        ] {
            let e = ArtifactStore::open(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    async fn read_all(mut s: ByteStream) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        got
    }

    fn stores(dir: &tempfile::TempDir) -> Vec<ArtifactStore> {
        crate::testing::test_artifact_stores(dir.path())
    }

    #[tokio::test]
    async fn every_backend_round_trips_files_ranges_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(&dir) {
            let who = store.describe();
            store.check().await.unwrap();
            let small = ArtifactPath::parse("m/model/MLmodel").unwrap();
            store.put(&small, body(vec![b"flavors: {}"])).await.unwrap();
            // Larger than one upload chunk: the multipart path.
            let big: Vec<u8> = (0..UPLOAD_CHUNK + 12_345)
                .map(|i| (i % 251) as u8)
                .collect();
            let big_path = ArtifactPath::parse("m/model/data/w.bin").unwrap();
            let chunks: Vec<Result<Bytes, String>> = big
                .chunks(1 << 20)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let n = store
                .put(&big_path, futures::stream::iter(chunks))
                .await
                .unwrap();
            assert_eq!(n as usize, big.len(), "{who}");
            assert_eq!(
                store.size(&big_path).await.unwrap() as usize,
                big.len(),
                "{who}"
            );
            let r = store
                .get_range(&big_path, Some(ByteRange::Bounded(10, 19)))
                .await
                .unwrap();
            assert_eq!(
                (r.size as usize, r.span.clone()),
                (big.len(), 10..20),
                "{who}"
            );
            assert_eq!(read_all(r.body).await, &big[10..20], "{who}");
            let r = store
                .get_range(&big_path, Some(ByteRange::Suffix(7)))
                .await
                .unwrap();
            assert_eq!(read_all(r.body).await, &big[big.len() - 7..], "{who}");
            assert!(
                matches!(
                    store.get_range(&big_path, Some(ByteRange::From(big.len() as u64))).await,
                    Err(StoreError::RangeNotSatisfiable(n)) if n as usize == big.len()
                ),
                "{who}"
            );
            let folder = ArtifactPath::parse("m/model").unwrap();
            let files: Vec<_> = store
                .walk(&folder)
                .await
                .unwrap()
                .into_iter()
                .map(|(p, n)| (p.to_string(), n))
                .collect();
            assert_eq!(
                files,
                vec![
                    ("MLmodel".to_string(), 11),
                    ("data/w.bin".to_string(), big.len() as u64)
                ],
                "{who}"
            );
            let dest = dir.path().join(format!("copy-{}", who.len()));
            store.download_dir(&folder, &dest).await.unwrap();
            assert_eq!(
                std::fs::read(dest.join("data/w.bin")).unwrap(),
                big,
                "{who}"
            );
            assert_eq!(std::fs::read(dest.join("MLmodel")).unwrap(), b"flavors: {}");
            assert!(matches!(
                store
                    .download_dir(&ArtifactPath::parse("none").unwrap(), &dest)
                    .await,
                Err(StoreError::ArtifactNotFound(_))
            ));
            // A directory delete takes everything under it, and only that.
            store.delete(&folder).await.unwrap();
            assert!(store.walk(&folder).await.unwrap().is_empty(), "{who}");
            assert!(
                matches!(
                    store.delete(&folder).await,
                    Err(StoreError::ArtifactNotFound(_))
                ),
                "{who}: a second delete finds nothing"
            );
        }
    }

    #[tokio::test]
    async fn client_driven_multipart_uploads_on_every_backend() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(&dir) {
            let who = store.describe();
            let p = ArtifactPath::parse("0/run/artifacts/big.bin").unwrap();
            let id = store.create_upload(&p).await.unwrap();
            // S3 wants every part but the last to be at least 5 MiB.
            let one = Bytes::from(vec![1u8; 5 << 20]);
            let two = Bytes::from_static(b"tail");
            // Parts may arrive in any order.
            let e2 = store
                .put_upload_part(&p, &id, 2, two.clone())
                .await
                .unwrap();
            let e1 = store
                .put_upload_part(&p, &id, 1, one.clone())
                .await
                .unwrap();
            assert!(
                store
                    .put_upload_part(&p, &id, 0, two.clone())
                    .await
                    .is_err(),
                "{who}: part 0"
            );
            let gap = store
                .complete_upload(&p, &id, vec![(1, e1.clone()), (3, e2.clone())])
                .await
                .unwrap_err();
            assert!(
                gap.to_string().contains("part 2 is missing"),
                "{who}: {gap}"
            );
            store
                .complete_upload(&p, &id, vec![(2, e2), (1, e1)])
                .await
                .unwrap();
            let (size, s) = store.get(&p).await.unwrap();
            assert_eq!(size as usize, one.len() + two.len(), "{who}");
            let got = read_all(s).await;
            assert_eq!(&got[..one.len()], &one[..]);
            assert_eq!(&got[one.len()..], b"tail");
            // An aborted upload leaves nothing behind.
            let q = ArtifactPath::parse("0/run/artifacts/gone.bin").unwrap();
            let id = store.create_upload(&q).await.unwrap();
            store
                .put_upload_part(&q, &id, 1, two.clone())
                .await
                .unwrap();
            store.abort_upload(&q, &id).await.unwrap();
            assert!(
                matches!(store.get(&q).await, Err(StoreError::ArtifactNotFound(_))),
                "{who}"
            );
        }
    }

    #[tokio::test]
    async fn local_uploads_refuse_foreign_ids_paths_and_etags() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path().join("art")).unwrap();
        let p = ArtifactPath::parse("a/f.bin").unwrap();
        let other = ArtifactPath::parse("a/g.bin").unwrap();
        let id = store.create_upload(&p).await.unwrap();
        let etag = store
            .put_upload_part(&p, &id, 1, Bytes::from_static(b"abc"))
            .await
            .unwrap();
        for bad_id in ["../../etc", "nope", &"0".repeat(32)] {
            assert!(matches!(
                store
                    .put_upload_part(&p, bad_id, 1, Bytes::from_static(b"x"))
                    .await,
                Err(StoreError::ArtifactNotFound(_))
            ));
        }
        assert!(
            matches!(
                store
                    .complete_upload(&other, &id, vec![(1, etag.clone())])
                    .await,
                Err(StoreError::ArtifactNotFound(_))
            ),
            "an upload id belongs to its path"
        );
        assert!(
            store
                .complete_upload(&p, &id, vec![(1, "\"1-99\"".into())])
                .await
                .is_err(),
            "a wrong ETag is refused"
        );
        store
            .complete_upload(&p, &id, vec![(1, etag)])
            .await
            .unwrap();
        let (_, s) = store.get(&p).await.unwrap();
        assert_eq!(read_all(s).await, b"abc");
        // Staging lives beside the root, never inside it.
        assert!(
            store
                .list(&ArtifactPath::root())
                .await
                .unwrap()
                .iter()
                .all(|e| e.name == "a")
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn escaping_symlink_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root = dir.path().join("root");
        let store = ArtifactStore::local(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        let p = ArtifactPath::parse("link/secret").unwrap();
        assert!(matches!(
            store.get(&p).await,
            Err(StoreError::InvalidPath(_))
        ));
        assert!(matches!(
            store.put(&p, body(vec![b"x"])).await,
            Err(StoreError::InvalidPath(_))
        ));
    }
}
