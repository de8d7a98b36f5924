//! Property and fuzz tests of the search-filter language (runs, experiments, models, traces
//! and datasets all use it): the committed corpus (`tests/corpus/search_filters.txt`) holds
//! filters that must parse and filters that must be refused; every input, arbitrary or mutated
//! from the corpus, gets `Ok` or `INVALID_PARAMETER_VALUE`, never a panic; filters built from
//! the grammar always parse to as many clauses as they were built from.

use proptest::prelude::*;

use super::*;

const CORPUS: &str = include_str!("../../tests/corpus/search_filters.txt");

fn corpus() -> Vec<(bool, String)> {
    CORPUS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (kind, rest) = l.split_at(l.find(' ').unwrap_or(l.len()));
            let text = rest
                .strip_prefix(' ')
                .unwrap_or(rest)
                .replace("\\u{0}", "\0");
            match kind {
                "ok" => Some((true, text)),
                "err" => Some((false, text)),
                _ => None,
            }
        })
        .collect()
}

/// The only outcomes a parser may have: a value, or a client error.
fn refused_cleanly<T>(r: &Result<T>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => matches!(e, Error::InvalidParameter(_)),
    }
}

#[test]
fn the_corpus_parses_as_recorded() {
    let all = corpus();
    assert!(all.len() > 40, "corpus too small: {}", all.len());
    let mut wrong = Vec::new();
    for (ok, f) in all {
        let r = parse_filter(&f);
        assert!(refused_cleanly(&r), "{f:?}: {r:?}");
        if r.is_ok() != ok {
            wrong.push(format!("{f:?} → {r:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const TOKENS: &[&str] = &[
    "metrics.",
    "params.",
    "tags.",
    "attributes.",
    "datasets.",
    "acc",
    "`",
    "'",
    "\"",
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "LIKE",
    "ILIKE",
    "IN",
    "NOT",
    "AND",
    "and",
    "OR",
    "(",
    ")",
    ",",
    "1.5e3",
    "-",
    ".",
    "run_name",
    "status",
    " ",
    "  ",
    "NULL",
    "IS",
    "0",
    "''",
    "%",
    "_",
    "é",
    "\0",
    "\\",
    "e",
    "E+",
    "1e999",
    "\t",
    "\n",
];

/// A corpus entry changed the way a fuzzer would: bytes flipped, cut, spliced, repeated.
fn mutate(seed: &str, ops: &[(u8, usize, usize)]) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for &(op, a, b) in ops {
        let n = s.len().max(1);
        match op % 5 {
            0 if !s.is_empty() => {
                s.remove(a % n);
            }
            1 => s.insert(
                a % (s.len() + 1),
                TOKENS[b % TOKENS.len()].chars().next().unwrap_or(' '),
            ),
            2 => s.truncate(a % (s.len() + 1)),
            3 => {
                let tail: Vec<char> = s.iter().skip(a % n).copied().collect();
                s.splice(b % (s.len() + 1)..b % (s.len() + 1), tail);
                s.truncate(4096);
            }
            _ => {
                let t = TOKENS[b % TOKENS.len()];
                let at = a % (s.len() + 1);
                s.splice(at..at, t.chars());
            }
        }
    }
    s.into_iter().collect()
}

fn clause() -> impl Strategy<Value = String> {
    let ident = "[a-z][a-z0-9_]{0,8}".prop_map(String::from);
    prop_oneof![
        (
            ident.clone(),
            prop::sample::select(vec!["=", "!=", ">", ">=", "<", "<="]),
            -1e6f64..1e6
        )
            .prop_map(|(k, op, v)| format!("metrics.{k} {op} {v}")),
        (
            ident.clone(),
            prop::sample::select(vec!["=", "!=", "LIKE", "ILIKE"]),
            "[ -&(-\\[\\]-~]{0,12}"
        )
            .prop_map(|(k, op, v)| format!("params.`{k}` {op} '{}'", v.replace('\'', "''"))),
        (ident, "[a-z ]{0,12}").prop_map(|(k, v)| format!("tags.\"{k}\" = \"{v}\"")),
        prop::collection::vec("[a-f0-9]{1,8}", 1..4).prop_map(|ids| format!(
            "attributes.run_id IN ({})",
            ids.iter()
                .map(|i| format!("'{i}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        prop_assert!(refused_cleanly(&parse_filter(&s)));
        prop_assert!(refused_cleanly(&parse_order_by(&s)));
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..24)) {
        let s: String = tokens.concat();
        prop_assert!(refused_cleanly(&parse_filter(&s)));
        prop_assert!(refused_cleanly(&parse_raw_filter(&s)));
        prop_assert!(refused_cleanly(&parse_order_by(&s)));
    }

    #[test]
    fn mutated_corpus_never_panics(
        pick in any::<prop::sample::Index>(),
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..8),
    ) {
        let all = corpus();
        let seed = &all[pick.index(all.len())].1;
        let s = mutate(seed, &ops);
        prop_assert!(refused_cleanly(&parse_filter(&s)), "{s:?}");
    }

    #[test]
    fn grammar_built_filters_parse(clauses in prop::collection::vec(clause(), 1..5)) {
        let f = clauses.join(" AND ");
        let parsed = parse_filter(&f);
        prop_assert!(parsed.is_ok(), "{f:?}: {parsed:?}");
        prop_assert_eq!(parsed.map(|c| c.len()).unwrap_or(0), clauses.len());
    }
}
