//! Property and fuzz tests of the Open Inference Protocol's request parsing: the JSON request
//! (committed corpus `tests/corpus/oip_requests.jsonl`, every line also mutated) and the binary
//! tensor extension. Whatever arrives — arbitrary JSON, cut or flipped bytes, absurd shapes,
//! binary sizes past the body — the answer is a tensor or an `InvalidInput`, never a panic;
//! well-formed tensors round-trip exactly.

use loopml_store::testing::mutate;
use proptest::prelude::*;

use super::*;
use crate::binary;

const CORPUS: &str = include_str!("../../tests/corpus/oip_requests.jsonl");

/// What the infer handler does with a body: header JSON, then each input from it and the
/// binary part. Only `Ok` or `InvalidInput` may come out.
fn parse(head: &[u8], mut bin: &[u8]) -> Result<Vec<Tensor>, String> {
    let req: InferRequest = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    req.inputs
        .into_iter()
        .map(|t| {
            let tensor = t.into_tensor(&mut bin);
            match tensor {
                Ok(t) => Ok(t),
                Err(Error::InvalidInput(m)) => Err(m),
                Err(other) => panic!("not a client error: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn the_corpus_parses_or_is_refused() {
    let lines: Vec<&str> = CORPUS.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 20);
    let four = [0u8; 16];
    let mut ok = 0;
    for l in &lines {
        if parse(l.as_bytes(), &four).is_ok() {
            ok += 1;
        }
    }
    // The well-formed half of the corpus parses (the binary one takes its 16 bytes).
    assert!(ok >= 8, "{ok} of {} parsed", lines.len());
}

const TYPES: [&str; 9] = [
    "BOOL", "UINT8", "INT32", "INT64", "FP32", "FP64", "BYTES", "FP16", "nope",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_never_panic(
        pick in any::<prop::sample::Index>(),
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..10),
        bin in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let lines: Vec<&str> = CORPUS.lines().filter(|l| !l.trim().is_empty()).collect();
        let head = mutate(lines[pick.index(lines.len())].as_bytes(), &ops);
        let _ = parse(&head, &bin);
    }

    #[test]
    fn any_shape_datatype_and_binary_size_is_handled(
        shape in prop::collection::vec(any::<i64>(), 0..5),
        datatype in prop::sample::select(TYPES.to_vec()),
        size in prop::option::of(any::<u64>()),
        data in prop::option::of(prop::collection::vec(-1e12f64..1e12, 0..16)),
        bin in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut input = serde_json::json!({"name": "x", "shape": shape, "datatype": datatype});
        if let Some(s) = size {
            input["parameters"] = serde_json::json!({"binary_data_size": s});
        }
        if let Some(d) = data {
            input["data"] = serde_json::json!(d);
        }
        let head = serde_json::json!({"inputs": [input]}).to_string();
        let _ = parse(head.as_bytes(), &bin);
    }

    #[test]
    fn binary_decoding_never_panics(
        datatype in prop::sample::select(TYPES[..7].to_vec()),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dt = DataType::parse(datatype).expect("a supported type");
        match binary::decode(dt, &raw, "x") {
            Ok(_) | Err(Error::InvalidInput(_)) => {}
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn float_tensors_round_trip_in_json_and_binary(values in prop::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..32)) {
        let n = values.len();
        let head = serde_json::json!({"inputs": [{"name": "x", "shape": [n], "datatype": "FP32", "data": values}]}).to_string();
        let t = parse(head.as_bytes(), &[]).expect("well-formed");
        prop_assert_eq!(&t[0].data, &TensorData::F32(values.clone()));
        let bytes = binary::encode(&TensorData::F32(values.clone()));
        let head = serde_json::json!({"inputs": [{"name": "x", "shape": [n], "datatype": "FP32", "parameters": {"binary_data_size": bytes.len()}}]}).to_string();
        let t = parse(head.as_bytes(), &bytes).expect("well-formed binary");
        prop_assert_eq!(&t[0].data, &TensorData::F32(values));
    }
}
