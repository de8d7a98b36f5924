//! The step cache: a key per step (sha256 over its resolved command or config, params,
//! environment, input file digests and upstream keys) and the lock file
//! `<pipeline folder>/.loopml/<pipeline>.lock` that remembers, per step, the key of its last
//! success, the digests of the files it produced and the outputs it published.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const LOCK_VERSION: u32 = 1;

/// What the lock file remembers about one step's last successful execution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LockEntry {
    /// The step's cache key.
    pub key: String,
    /// Output files (as written in the pipeline, resolved) and their sha256.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Outputs the step published (`key=value` lines, `run_id`).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// The tracked run that executed it.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The tracking server of that run.
    #[serde(default)]
    pub tracking_uri: Option<String>,
    /// When it finished (ms since the Unix epoch).
    #[serde(default)]
    pub finished_ms: u64,
}

/// The lock file of a pipeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LockFile {
    /// Format version.
    pub version: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// One entry per step that has succeeded.
    pub steps: BTreeMap<String, LockEntry>,
}

impl LockFile {
    /// An empty lock file for `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        Self {
            version: LOCK_VERSION,
            pipeline: pipeline.to_string(),
            steps: BTreeMap::new(),
        }
    }

    /// Reads the lock file; a missing, unreadable or foreign one reads as empty (the steps
    /// then run again), which is why this returns no error.
    pub fn read(path: &Path, pipeline: &str) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::new(pipeline);
        };
        match serde_json::from_str::<LockFile>(&text) {
            Ok(l) if l.version == LOCK_VERSION && l.pipeline == pipeline => l,
            Ok(_) => Self::new(pipeline),
            Err(e) => {
                tracing::warn!("{}: ignoring an unreadable step cache: {e}", path.display());
                Self::new(pipeline)
            }
        }
    }

    /// Writes the lock file atomically (temp file in the same folder, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let err = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension(format!("lock.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }
}

/// The sha256 (hex) of a file's content, or of a folder's tree (relative paths and file
/// digests, in sorted order).
pub fn digest_path(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    if std::fs::metadata(path)?.is_dir() {
        h.update(b"dir\0");
        digest_dir(path, Path::new(""), &mut h, 0)?;
    } else {
        digest_file(path, &mut h)?;
    }
    Ok(hex(&h.finalize()))
}

fn digest_file(path: &Path, h: &mut Sha256) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn digest_dir(root: &Path, rel: &Path, h: &mut Sha256, depth: usize) -> std::io::Result<()> {
    if depth > 64 {
        return Err(std::io::Error::other(format!(
            "{}: folders nested too deep (a symlink loop?)",
            root.join(rel).display()
        )));
    }
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for name in entries {
        let r = rel.join(&name);
        let full = root.join(&r);
        let text = r.to_string_lossy();
        put(h, text.as_bytes());
        if std::fs::metadata(&full)?.is_dir() {
            h.update(b"d");
            digest_dir(root, &r, h, depth + 1)?;
        } else {
            h.update(b"f");
            let mut fh = Sha256::new();
            digest_file(&full, &mut fh)?;
            h.update(fh.finalize());
        }
    }
    Ok(())
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Length-prefixed, so that no two different field lists hash the same.
fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// A labelled list of pairs, each length-prefixed.
fn put_list<'a>(
    h: &mut Sha256,
    label: &[u8],
    items: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) {
    put(h, label);
    h.update((items.len() as u64).to_le_bytes());
    for (a, b) in items {
        put(h, a.as_bytes());
        put(h, b.as_bytes());
    }
}

/// Everything a step's cache key covers.
#[derive(Debug, Clone)]
pub struct KeyInput<'a> {
    /// The step's kind.
    pub kind: &'a str,
    /// The resolved command, or the resolved fields of a built-in step.
    pub config: Vec<(String, String)>,
    /// The run's params (every command sees them all as `LOOPML_PARAM_*`).
    pub params: &'a BTreeMap<String, String>,
    /// The environment the pipeline and the run options add.
    pub env: Vec<(String, String)>,
    /// Input paths and their digests.
    pub inputs: Vec<(String, String)>,
    /// Direct upstream steps and their keys.
    pub upstream: Vec<(String, String)>,
}

/// The cache key (sha256 hex) of a step.
pub fn step_key(k: &KeyInput<'_>) -> String {
    let mut h = Sha256::new();
    put(&mut h, b"loopml-step-key-v1");
    put(&mut h, k.kind.as_bytes());
    put_list(&mut h, b"config", k.config.iter().map(|(a, b)| (a, b)));
    put_list(&mut h, b"params", k.params.iter());
    put_list(&mut h, b"env", k.env.iter().map(|(a, b)| (a, b)));
    put_list(&mut h, b"inputs", k.inputs.iter().map(|(a, b)| (a, b)));
    put_list(&mut h, b"upstream", k.upstream.iter().map(|(a, b)| (a, b)));
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(command: &str, params: &BTreeMap<String, String>, input: &Path, up: &str) -> String {
        step_key(&KeyInput {
            kind: "run",
            config: vec![("command".into(), command.into())],
            params,
            env: vec![("SEED".into(), "7".into())],
            inputs: vec![("train.py".into(), digest_path(input).unwrap())],
            upstream: vec![("gen".into(), up.into())],
        })
    }

    #[test]
    fn key_changes_with_input_param_command_and_upstream_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("train.py");
        std::fs::write(&f, "print(1)\n").unwrap();
        let mut params = BTreeMap::from([("rows".to_string(), "10".to_string())]);
        let base = key("python train.py", &params, &f, "k1");
        assert_eq!(base.len(), 64);
        assert_eq!(
            key("python train.py", &params, &f, "k1"),
            base,
            "deterministic"
        );
        // Touching without changing content keeps the key.
        std::fs::write(&f, "print(1)\n").unwrap();
        assert_eq!(key("python train.py", &params, &f, "k1"), base);
        std::fs::write(&f, "print(2)\n").unwrap();
        let changed_input = key("python train.py", &params, &f, "k1");
        assert_ne!(changed_input, base);
        std::fs::write(&f, "print(1)\n").unwrap();
        assert_eq!(
            key("python train.py", &params, &f, "k1"),
            base,
            "back to the same content"
        );
        params.insert("rows".into(), "11".into());
        assert_ne!(key("python train.py", &params, &f, "k1"), base);
        params.insert("rows".into(), "10".into());
        assert_ne!(key("python train.py -v", &params, &f, "k1"), base);
        assert_ne!(key("python train.py", &params, &f, "k2"), base);
        // Field boundaries matter: moving text between fields changes the key.
        let a = step_key(&KeyInput {
            kind: "run",
            config: vec![("a".into(), "bc".into())],
            params: &params,
            env: Vec::new(),
            inputs: Vec::new(),
            upstream: Vec::new(),
        });
        let b = step_key(&KeyInput {
            kind: "run",
            config: vec![("ab".into(), "c".into())],
            params: &params,
            env: Vec::new(),
            inputs: Vec::new(),
            upstream: Vec::new(),
        });
        assert_ne!(a, b);
    }

    #[test]
    fn folder_digests_cover_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("model");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.txt"), "a").unwrap();
        std::fs::write(d.join("sub/b.txt"), "b").unwrap();
        let first = digest_path(&d).unwrap();
        assert_eq!(digest_path(&d).unwrap(), first);
        std::fs::write(d.join("sub/b.txt"), "B").unwrap();
        let second = digest_path(&d).unwrap();
        assert_ne!(second, first);
        std::fs::rename(d.join("sub/b.txt"), d.join("sub/c.txt")).unwrap();
        assert_ne!(digest_path(&d).unwrap(), second);
        assert!(digest_path(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn lock_file_round_trips_and_tolerates_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".loopml/p.lock");
        assert_eq!(LockFile::read(&path, "p"), LockFile::new("p"));
        let mut l = LockFile::new("p");
        l.steps.insert(
            "a".into(),
            LockEntry {
                key: "k".into(),
                outputs: BTreeMap::from([("x".into(), "1".into())]),
                ..Default::default()
            },
        );
        l.write(&path).unwrap();
        assert_eq!(LockFile::read(&path, "p"), l);
        assert_eq!(LockFile::read(&path, "other"), LockFile::new("other"));
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(LockFile::read(&path, "p"), LockFile::new("p"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(".loopml"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }
}
