//! Fuzz test of the pipeline spec parser: the examples (`examples/churn/pipeline.yaml`,
//! `examples/credit/pipeline.yaml`) are the corpus and parse; mutated or arbitrary text is a
//! pipeline or a parse/validation error, never a panic.

use loopml_store::testing::{Mutation, mutate};
use proptest::prelude::*;

use super::*;

const SEEDS: [&str; 2] = [
    include_str!("../../../../examples/churn/pipeline.yaml"),
    include_str!("../../../../examples/credit/pipeline.yaml"),
];

fn parse(text: &str) {
    let _ = Pipeline::from_yaml(text, std::path::Path::new("/fuzz/pipeline.yaml"));
}

#[test]
fn the_examples_parse() {
    for s in SEEDS {
        let p = Pipeline::from_yaml(s, std::path::Path::new("/fuzz/pipeline.yaml"));
        assert!(p.is_ok(), "{p:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pipelines_never_panic(
        pick in 0usize..2,
        steps in prop::collection::vec(any::<Mutation>(), 1..12),
    ) {
        parse(&String::from_utf8_lossy(&mutate(SEEDS[pick].as_bytes(), &steps)));
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        parse(&s);
    }
}
