//! Every fixture model (scikit-learn pipelines through skl2onnx, XGBoost/LightGBM through
//! onnxmltools, a PyTorch MLP) loads, and its outputs equal ONNX Runtime's in Python and the
//! original model's predictions (`tests/fixtures/expected.json`, written by `gen_models.py`).
//! Needs ONNX Runtime: `scripts/setup-ort.sh` (CI sets `LOOPML_REQUIRE_ORT=1`, so a missing
//! library fails instead of skipping).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code: a panic is the failure report; tasks are the concurrent callers

use std::path::{Path, PathBuf};

use loopml_serving::model::{OnnxModel, Outputs, onnx_file};
use loopml_serving::{DataType, Tensor, TensorData};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Whether ONNX Runtime is available; a skip is printed when it is not (and not required).
fn runtime() -> bool {
    match loopml_serving::runtime::environment(None) {
        Ok(_) => true,
        Err(e) if std::env::var_os("LOOPML_REQUIRE_ORT").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("SKIPPED (no ONNX Runtime): {e}");
            false
        }
    }
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

/// The fixture's test inputs as tensors of the model's types, rows `rows`.
fn inputs(model: &OnnxModel, test_inputs: &Value, rows: std::ops::Range<usize>) -> Vec<Tensor> {
    model
        .inputs()
        .iter()
        .map(|spec| {
            let all = test_inputs[&spec.name].as_array().unwrap();
            let picked = &all[rows.clone()];
            let width = picked[0].as_array().map_or(1, Vec::len);
            let flat: Vec<&Value> = picked
                .iter()
                .flat_map(|r| r.as_array().map_or_else(|| vec![r], |a| a.iter().collect()))
                .collect();
            let data = match spec.datatype {
                DataType::Bytes => {
                    TensorData::Bytes(flat.iter().map(|v| v.as_str().unwrap().into()).collect())
                }
                _ => TensorData::F64(flat.iter().map(|v| v.as_f64().unwrap()).collect())
                    .cast(spec.datatype, &spec.name)
                    .unwrap(),
            };
            Tensor {
                name: spec.name.clone(),
                shape: vec![picked.len() as i64, width as i64],
                data,
            }
        })
        .collect()
}

fn flat_numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat_numbers(x, out)),
        Value::Object(m) => {
            // ZipMap rows: {label: prob}, labels sorted as loopml sorts them.
            let mut kv: Vec<(&String, &Value)> = m.iter().collect();
            kv.sort_by_key(|(k, _)| k.parse::<i64>().unwrap_or(i64::MAX));
            kv.into_iter().for_each(|(_, x)| flat_numbers(x, out));
        }
        other => out.push(other.as_f64().unwrap()),
    }
}

/// Compares loopml's outputs with one of the fixture's output sets, rows `rows`.
fn compare(file: &str, got: &Outputs, want: &Value, rows: std::ops::Range<usize>, tol: f64) {
    for (t, labels) in got.tensors.iter().zip(&got.labels) {
        let w = &want[&t.name];
        let data = &w["data"].as_array().unwrap()[rows.clone()];
        if let TensorData::Bytes(s) = &t.data {
            let ws: Vec<&str> = data.iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(s, &ws, "{file} {}", t.name);
            continue;
        }
        if let Some(labels) = labels {
            let first = data[0].as_object().unwrap();
            let mut keys: Vec<&String> = first.keys().collect();
            keys.sort_by_key(|k| k.parse::<i64>().unwrap_or(i64::MAX));
            assert_eq!(labels.iter().collect::<Vec<_>>(), keys, "{file} labels");
        }
        let mut want_n = Vec::new();
        data.iter().for_each(|v| flat_numbers(v, &mut want_n));
        let got_n: Vec<f64> = t
            .data
            .to_json()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            got_n.len(),
            want_n.len(),
            "{file} {}: element count",
            t.name
        );
        for (i, (g, w)) in got_n.iter().zip(&want_n).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{file} {}[{i}]: loopml {g}, expected {w}",
                t.name
            );
        }
        assert_eq!(t.shape[0] as usize, rows.len(), "{file} {}: rows", t.name);
    }
}

#[test]
fn every_fixture_model_matches_onnxruntime_and_the_original_model() {
    if !runtime() {
        return;
    }
    let e = expected();
    let models = e["models"].as_array().unwrap();
    assert!(models.len() >= 8, "fixtures: {}", models.len());
    for m in models {
        let file = m["file"].as_str().unwrap();
        let model = OnnxModel::load(&fixtures().join(file), 2).unwrap();
        let n = m["test_inputs"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_array()
            .unwrap()
            .len();
        let batch = model
            .prepare(inputs(&model, &m["test_inputs"], 0..n))
            .unwrap();
        let out = model.run(&batch).unwrap();
        // The same runtime in Python: tight. The original model: loose (float32 in ONNX).
        compare(file, &out, &m["onnxruntime"], 0..n, 1e-6);
        compare(file, &out, &m["original"], 0..n, 1e-5);
        // Each row alone gives the batch's answer.
        for r in 0..n {
            let one = model
                .prepare(inputs(&model, &m["test_inputs"], r..r + 1))
                .unwrap();
            compare(
                file,
                &model.run(&one).unwrap(),
                &m["onnxruntime"],
                r..r + 1,
                1e-6,
            );
        }
    }
}

#[test]
fn an_mlflow_onnx_model_directory_is_served_directly() {
    if !runtime() {
        return;
    }
    let dir = fixtures().join("mlflow_onnx_model");
    let file = onnx_file(&dir).unwrap();
    assert!(file.ends_with("model.onnx"));
    let model = OnnxModel::load(&file, 1).unwrap();
    assert_eq!(model.inputs()[0].name, "features");
    let err = onnx_file(&fixtures()).unwrap_err().to_string();
    assert!(err.contains("MLmodel"), "{err}");
}

#[test]
fn bad_inputs_name_the_input() {
    if !runtime() {
        return;
    }
    let model = OnnxModel::load(&fixtures().join("sk_mixed_pipeline.onnx"), 1).unwrap();
    let num = |shape: Vec<i64>, v: Vec<f64>| Tensor {
        name: "num".into(),
        shape,
        data: TensorData::F64(v),
    };
    let color = |v: TensorData| Tensor {
        name: "color".into(),
        shape: vec![1, 1],
        data: v,
    };
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (
            vec![num(vec![1, 2], vec![1.0, 2.0])],
            "missing input 'color'",
        ),
        (
            vec![
                num(vec![1, 2], vec![1.0, 2.0]),
                color(TensorData::F64(vec![1.0])),
            ],
            "input 'color'",
        ),
        (
            vec![
                num(vec![1, 3], vec![1.0, 2.0, 3.0]),
                color(TensorData::Bytes(vec!["red".into()])),
            ],
            "input 'num': shape [1, 3]",
        ),
        (
            vec![
                num(vec![1, 2], vec![1.0]),
                color(TensorData::Bytes(vec!["red".into()])),
            ],
            "input 'num': shape [1, 2] holds 2",
        ),
        (
            vec![Tensor {
                name: "nope".into(),
                shape: vec![1],
                data: TensorData::F32(vec![1.0]),
            }],
            "unknown input 'nope'",
        ),
    ];
    for (inputs, want) in cases {
        let err = model.prepare(inputs).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?}, got {err}");
    }
    // An unseen category still runs (OneHotEncoder ignores it), as in scikit-learn.
    let ok = model
        .prepare(vec![
            num(vec![1, 2], vec![0.5, 0.5]),
            color(TensorData::Bytes(vec!["purple".into()])),
        ])
        .unwrap();
    assert!(model.run(&ok).is_ok());
}

fn rf_request(i: usize) -> (Vec<Tensor>, usize) {
    let rows = 1 + i % 3;
    let data: Vec<f32> = (0..rows * 4)
        .map(|k| ((i * 7 + k * 3) % 50) as f32 / 8.0 - 2.0)
        .collect();
    (
        vec![Tensor {
            name: "features".into(),
            shape: vec![rows as i64, 4],
            data: TensorData::F32(data),
        }],
        rows,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_requests_get_their_own_rows() {
    use loopml_serving::batcher::{BatchConfig, Batcher};
    use std::sync::Arc;
    if !runtime() {
        return;
    }
    let model = Arc::new(OnnxModel::load(&fixtures().join("sk_rf_classifier.onnx"), 2).unwrap());
    let config = BatchConfig {
        max_batch_size: 8,
        max_queue_delay_us: 2_000,
        preferred_batch_sizes: vec![4],
        max_queue_size: 1024,
    };
    let batcher = Arc::new(Batcher::start(Arc::clone(&model), config, 2, None).unwrap());
    let mut handles = Vec::new();
    for i in 0..60 {
        let (b, m) = (Arc::clone(&batcher), Arc::clone(&model));
        handles.push(tokio::spawn(async move {
            let (inputs, rows) = rf_request(i);
            let got = b.infer(std::sync::Arc::new(inputs.clone())).await.unwrap();
            let want = m.run(&inputs).unwrap();
            assert_eq!(got.tensors[0].shape[0] as usize, rows);
            assert_eq!(got, want, "request {i}");
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let (calls, requests) = batcher.stats();
    assert_eq!(requests, 60);
    assert!(
        calls < 60,
        "requests were batched: {calls} calls for 60 requests"
    );
    // Settings are checked.
    let bad = BatchConfig {
        max_batch_size: 4,
        preferred_batch_sizes: vec![8],
        ..BatchConfig::default()
    };
    assert!(Batcher::start(model, bad, 1, None).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_overloaded_at_once() {
    use std::sync::Arc;
    if !runtime() {
        return;
    }
    let model = Arc::new(OnnxModel::load(&fixtures().join("sk_gb_regressor.onnx"), 1).unwrap());
    // Batching on (2 rows), then off: every model's queue is bounded.
    for max_batch_size in [2, 0] {
        overloads(&model, max_batch_size).await;
    }
}

async fn overloads(model: &std::sync::Arc<OnnxModel>, max_batch_size: usize) {
    use loopml_serving::batcher::{BatchConfig, Batcher};
    use std::sync::Arc;
    let config = BatchConfig {
        max_batch_size,
        max_queue_delay_us: 0,
        preferred_batch_sizes: vec![],
        max_queue_size: 1,
    };
    let batcher = Arc::new(Batcher::start(Arc::clone(model), config, 1, None).unwrap());
    let input = vec![Tensor {
        name: "features".into(),
        shape: vec![1, 5],
        data: TensorData::F32(vec![0.5; 5]),
    }];
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let (b, x) = (Arc::clone(&batcher), input.clone());
            tokio::spawn(async move { b.infer(std::sync::Arc::new(x)).await })
        })
        .collect();
    let (mut ok, mut overloaded) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(out) => {
                assert_eq!(out.tensors[0].shape, vec![1, 1]);
                ok += 1;
            }
            Err(loopml_serving::Error::Overloaded(m)) => {
                assert!(m.contains("queue is full"), "{m}");
                overloaded += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        ok > 0 && overloaded > 0,
        "batch {max_batch_size}: ok {ok}, overloaded {overloaded}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_batching_each_request_runs_alone_on_the_session_workers() {
    use loopml_serving::batcher::{BatchConfig, Batcher};
    use std::sync::Arc;
    if !runtime() {
        return;
    }
    let model = Arc::new(OnnxModel::load(&fixtures().join("sk_rf_classifier.onnx"), 2).unwrap());
    let batcher =
        Arc::new(Batcher::start(Arc::clone(&model), BatchConfig::default(), 2, None).unwrap());
    assert!(!batcher.batching());
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let (b, m) = (Arc::clone(&batcher), Arc::clone(&model));
            tokio::spawn(async move {
                let (inputs, _) = rf_request(i);
                let got = b.infer(Arc::new(inputs.clone())).await.unwrap();
                assert_eq!(got, m.run(&inputs).unwrap(), "request {i}");
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(batcher.stats(), (40, 40), "one call per request");
}
