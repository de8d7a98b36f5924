//! Fuzz test of the monitor spec parser (YAML or JSON, sent over HTTP): the example monitor
//! (`examples/churn/monitor.yaml`, the corpus) parses; mutated or arbitrary text is a spec or
//! `Error::Invalid`, never a panic.

use loopml_store::testing::{Mutation, mutate};
use proptest::prelude::*;

use super::*;

const SEED: &str = include_str!("../../../../examples/churn/monitor.yaml");

fn clean(text: &str) -> bool {
    matches!(MonitorSpec::parse(text), Ok(_) | Err(Error::Invalid(_)))
}

#[test]
fn the_example_monitor_parses() {
    assert!(MonitorSpec::parse(SEED).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_monitors_never_panic(steps in prop::collection::vec(any::<Mutation>(), 1..12)) {
        let text = String::from_utf8_lossy(&mutate(SEED.as_bytes(), &steps)).into_owned();
        prop_assert!(clean(&text));
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        prop_assert!(clean(&s));
    }
}
