//! Artifact storage behind `object_store`: a local folder by default. Every path a user sends
//! is parsed into an [`ArtifactPath`] first, which rejects `..`, absolute paths and other
//! escapes; on the local backend, symlinks that leave the root are rejected too. Bodies are
//! streamed in both directions, so a 1 GB artifact never sits in memory.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, WriteMultipart};

use crate::StoreError;

/// A stream of artifact bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Chunk size of streamed uploads.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// Read size of local downloads: large enough that a 1 GB file is ~1000 blocking reads.
const DOWNLOAD_CHUNK: usize = 1024 * 1024;

/// Streams a local file in large chunks (object_store's local reader uses 8 KiB chunks,
/// each a blocking-pool round trip, which caps downloads far below disk speed).
async fn local_file_stream(
    full: PathBuf,
    path: &ArtifactPath,
) -> Result<(u64, ByteStream), StoreError> {
    let file = match tokio::fs::File::open(&full).await {
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
    let stream = futures::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(DOWNLOAD_CHUNK);
        while buf.len() < DOWNLOAD_CHUNK {
            let n = file
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
            Ok(Some((buf.freeze(), file)))
        }
    })
    .boxed();
    Ok((size, stream))
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

    fn to_object_path(&self) -> Result<ObjPath, StoreError> {
        ObjPath::parse(&self.0).map_err(|e| StoreError::InvalidPath(e.to_string()))
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

/// The artifact store.
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// Canonical root on disk, for the local backend (symlink confinement).
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("local_root", &self.local_root)
            .finish()
    }
}

impl ArtifactStore {
    /// A store rooted at a local folder (created if missing).
    pub fn local(root: impl AsRef<FsPath>) -> Result<Self, StoreError> {
        let root = root.as_ref();
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::Artifact(format!("cannot create {}: {e}", root.display())))?;
        let canon = root
            .canonicalize()
            .map_err(|e| StoreError::Artifact(format!("cannot resolve {}: {e}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&canon)?;
        Ok(Self {
            store: Arc::new(fs),
            local_root: Some(canon),
        })
    }

    /// Human description of where artifacts live.
    pub fn describe(&self) -> String {
        match &self.local_root {
            Some(p) => p.display().to_string(),
            None => self.store.to_string(),
        }
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
        let loc = path.to_object_path()?;
        let upload = self.store.put_multipart(&loc).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
        let mut total = 0u64;
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
            return local_file_stream(root.join(path.as_str()), path).await;
        }
        let loc = path.to_object_path()?;
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
        let prefix = if dir.is_root() {
            None
        } else {
            Some(dir.to_object_path()?)
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
        let loc = path.to_object_path()?;
        match self.store.delete(&loc).await {
            Ok(()) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(_) => {}
        }
        let mut found = false;
        let mut listing = self.store.list(Some(&loc));
        let mut victims = Vec::new();
        while let Some(meta) = listing.next().await {
            victims.push(meta?.location);
        }
        drop(listing);
        for v in victims {
            found = true;
            self.store.delete(&v).await?;
        }
        if let Some(root) = &self.local_root {
            let full = root.join(path.as_str());
            if full.is_dir() {
                found = true;
                let _ = std::fs::remove_dir_all(&full);
            }
        }
        if found {
            Ok(())
        } else {
            Err(StoreError::ArtifactNotFound(path.to_string()))
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
