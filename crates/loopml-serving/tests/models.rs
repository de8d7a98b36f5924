//! Every fixture model (scikit-learn pipelines through skl2onnx, XGBoost/LightGBM through
//! onnxmltools, a PyTorch MLP) loads, and its outputs equal ONNX Runtime's in Python and the
//! original model's predictions (`tests/fixtures/expected.json`, written by `gen_models.py`).
//! Needs ONNX Runtime: `scripts/setup-ort.sh` (CI sets `LOOPML_REQUIRE_ORT=1`, so a missing
//! library fails instead of skipping).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

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
