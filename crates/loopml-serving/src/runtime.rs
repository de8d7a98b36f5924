//! Finding and loading ONNX Runtime. The library is not linked: it is loaded once per process
//! from, in order, the path given (`--ort-lib`), `LOOPML_ORT_LIB`, `ORT_DYLIB_PATH`, or the copy
//! `scripts/setup-ort.sh` unpacks into `.cache/onnxruntime/<version>/` (looked up from the
//! working directory and from the executable's folder upwards). The server starts without it;
//! only loading a model reports its absence, with the fix.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The ONNX Runtime version `scripts/setup-ort.sh` fetches.
pub const DEFAULT_ORT_VERSION: &str = "1.32.0";

static ENV: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// Where the library would be found, without loading it.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    for var in ["LOOPML_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    let name = format!("libonnxruntime.so.{DEFAULT_ORT_VERSION}");
    roots
        .iter()
        .map(|r| {
            r.join(".cache/onnxruntime")
                .join(DEFAULT_ORT_VERSION)
                .join(&name)
        })
        .find(|p| p.is_file())
}

/// Loads ONNX Runtime (once per process) and returns its environment and library path.
pub fn environment(explicit: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    let loaded = ENV.get_or_init(|| {
        let Some(path) = locate(explicit) else {
            return Err(format!(
                "ONNX Runtime is not installed: run scripts/setup-ort.sh (it fetches \
                 libonnxruntime.so {DEFAULT_ORT_VERSION} from PyPI's onnxruntime wheel), or set \
                 LOOPML_ORT_LIB to a libonnxruntime.so (version 1.24 or newer)"
            ));
        };
        if !path.is_file() {
            return Err(format!(
                "ONNX Runtime library {} does not exist: fix LOOPML_ORT_LIB / --ort-lib, or run \
                 scripts/setup-ort.sh",
                path.display()
            ));
        }
        let env = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("loopml")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
        Ok((path, env))
    });
    match loaded {
        Ok((_, env)) => Ok(env),
        Err(e) => Err(Error::Runtime(e.clone())),
    }
}

/// The library path in use, once loaded.
pub fn loaded_library() -> Option<&'static Path> {
    ENV.get()
        .and_then(|r| r.as_ref().ok())
        .map(|(p, _)| p.as_path())
}
