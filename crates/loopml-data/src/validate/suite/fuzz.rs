//! Fuzz test of the expectation-suite parser (Great Expectations' YAML, uploaded by users):
//! the example suite (`examples/churn/suite.yaml`, the corpus) parses; mutated or arbitrary
//! text is a suite or `Error::Invalid`, never a panic.

use loopml_store::testing::{Mutation, mutate};
use proptest::prelude::*;

use super::*;

const SEED: &str = include_str!("../../../../../examples/churn/suite.yaml");

fn clean(text: &str) -> bool {
    matches!(
        Suite::from_yaml(text, "fuzz.yaml"),
        Ok(_) | Err(Error::Invalid(_))
    )
}

#[test]
fn the_example_suite_parses() {
    assert!(Suite::from_yaml(SEED, "suite.yaml").is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_suites_never_panic(steps in prop::collection::vec(any::<Mutation>(), 1..12)) {
        let text = String::from_utf8_lossy(&mutate(SEED.as_bytes(), &steps)).into_owned();
        prop_assert!(clean(&text));
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        prop_assert!(clean(&s));
    }
}
