//! Model serving for loopml: ONNX models run by ONNX Runtime (loaded at run time from the
//! `libonnxruntime.so` of PyPI's `onnxruntime` wheel), typed tensors in and out, and the
//! protocols clients speak (Open Inference Protocol v2; MLflow's scoring protocol).
//! On top: dynamic batching, deployments with traffic policies (canary, blue-green, shadow,
//! A/B, bandit), the inference log with feedback, and Prometheus metrics.

pub mod batcher;
pub mod binary;
pub mod deployment_store;
pub mod deployments;
pub mod endpoints;
pub mod error;
pub mod infer_log;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod repository;
pub mod routes;
pub mod runtime;
pub mod scoring;
pub mod tensor;

pub use error::{Error, Result};
pub use model::OnnxModel;
pub use tensor::{DataType, Tensor, TensorData, TensorSpec};
