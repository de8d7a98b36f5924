//! Scoring a registered model version on a table, outside any endpoint: what a gate needs to
//! compare champion and challenger on the same rows. The rows go through the DataFrame → ONNX
//! mapping `/invocations` uses and the outputs are named as the inference log names them
//! (`out_label`, `out_probabilities_1`, skl2onnx's ZipMap `out_output_probability_1`, …), so a
//! gate and a monitor's performance check read the same columns.

use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::model::{OnnxModel, Outputs};
use crate::routes::{Frame, ServingApi, frame_inputs};

/// Rows scored per model call (bounds the tensors of one call).
const CHUNK_ROWS: usize = 4096;

impl ServingApi {
    /// Loads the model a `models:/NAME/VERSION` (or `@alias`) URI names, for scoring only: it
    /// is not served and not kept. Returns its registry version and the model.
    pub async fn load_for_scoring(&self, uri: &str) -> Result<(String, Arc<OnnxModel>), Error> {
        let resolver = self.resolver.as_ref().ok_or_else(|| {
            Error::InvalidInput("this server has no model registry to score versions from".into())
        })?;
        let found = resolver.resolve(uri).await?;
        let file = crate::model::onnx_file(&found.path)?;
        let model = tokio::task::spawn_blocking(move || OnnxModel::load(&file, 1))
            .await
            .map_err(|e| Error::Model(format!("loading stopped: {e}")))??;
        Ok((found.version, Arc::new(model)))
    }
}

/// Predictions of `model` for a table of named columns (blocking: run it off the executor),
/// as columns named like the inference log's outputs, each with one value per row.
pub fn predict_table(
    model: &OnnxModel,
    columns: &[String],
    rows: &[Vec<Value>],
) -> Result<Vec<(String, Vec<Value>)>, Error> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for chunk in rows.chunks(CHUNK_ROWS) {
        let frame = Frame {
            columns: columns.to_vec(),
            rows: chunk.to_vec(),
        };
        let inputs = model.prepare(frame_inputs(model, &frame)?)?;
        let outputs = model.run(&inputs)?;
        let cols = output_columns(&outputs, chunk.len());
        if out.is_empty() {
            out = cols;
        } else {
            for ((_, all), (_, more)) in out.iter_mut().zip(cols) {
                all.extend(more);
            }
        }
    }
    Ok(out)
}

/// The per-row output columns of one call, named as the inference log names them: `out_{name}`
/// for one value per row, `out_{name}_{label}` for a ZipMap's classes, else `out_{name}_{j}`.
fn output_columns(out: &Outputs, rows: usize) -> Vec<(String, Vec<Value>)> {
    let mut cols = Vec::new();
    for (t, labels) in out.tensors.iter().zip(&out.labels) {
        let values = t.data.to_json();
        if rows == 0 || values.len() % rows != 0 {
            continue;
        }
        let width = values.len() / rows;
        for j in 0..width {
            let name = match labels {
                Some(l) if l.len() == width => format!("out_{}_{}", t.name, l[j]),
                _ if width == 1 => format!("out_{}", t.name),
                _ => format!("out_{}_{j}", t.name),
            };
            let col = (0..rows).map(|r| values[r * width + j].clone()).collect();
            cols.push((name, col));
        }
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Tensor, TensorData};

    #[test]
    fn outputs_are_named_as_the_inference_log_names_them() {
        let out = Outputs {
            tensors: vec![
                Tensor {
                    name: "label".into(),
                    shape: vec![2],
                    data: TensorData::I64(vec![1, 0]),
                },
                Tensor {
                    name: "output_probability".into(),
                    shape: vec![2, 2],
                    data: TensorData::F32(vec![0.2, 0.8, 0.9, 0.1]),
                },
            ],
            labels: vec![None, Some(vec!["0".into(), "1".into()])],
        };
        let cols = output_columns(&out, 2);
        let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "out_label",
                "out_output_probability_0",
                "out_output_probability_1"
            ]
        );
        assert_eq!(cols[0].1, vec![serde_json::json!(1), serde_json::json!(0)]);
        assert!((cols[2].1[0].as_f64().unwrap() - 0.8).abs() < 1e-6);
    }
}
