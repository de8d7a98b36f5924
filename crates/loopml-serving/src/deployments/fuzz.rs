//! Fuzz tests of the deployment spec parser (YAML or JSON, sent over HTTP) and of the MLmodel
//! reader: the examples (`examples/churn/deployment.yaml`, `examples/credit/deployment.yaml`,
//! the ONNX fixture's MLmodel) are the corpus; mutated or arbitrary text is a spec or a
//! client error, never a panic.

use loopml_store::testing::{Mutation, mutate};
use proptest::prelude::*;

use super::*;

const SEEDS: [&str; 3] = [
    include_str!("../../../../examples/churn/deployment.yaml"),
    include_str!("../../../../examples/credit/deployment.yaml"),
    include_str!("../../tests/fixtures/mlflow_onnx_model/MLmodel"),
];

fn clean(text: &str) -> bool {
    matches!(
        DeploymentSpec::parse(text),
        Ok(_) | Err(Error::InvalidInput(_))
    )
}

/// The MLmodel reader on `text`: an ONNX file path, or a `Model` error naming the file.
fn mlmodel(text: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("MLmodel"), text).expect("write");
    matches!(
        crate::model::onnx_file(dir.path()),
        Ok(_) | Err(Error::Model(_))
    )
}

#[test]
fn the_examples_parse() {
    assert!(DeploymentSpec::parse(SEEDS[0]).is_ok());
    assert!(DeploymentSpec::parse(SEEDS[1]).is_ok());
    assert!(mlmodel(SEEDS[2]));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_never_panic(
        pick in 0usize..3,
        steps in prop::collection::vec(any::<Mutation>(), 1..12),
    ) {
        let text = String::from_utf8_lossy(&mutate(SEEDS[pick].as_bytes(), &steps)).into_owned();
        prop_assert!(clean(&text));
        prop_assert!(mlmodel(&text));
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        prop_assert!(clean(&s));
    }
}
