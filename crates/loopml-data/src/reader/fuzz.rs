//! Fuzz tests of the CSV and Parquet readers (every dataset a user uploads goes through them):
//! the committed CSV corpus (`tests/corpus/small.csv`) and a Parquet file written from it, with
//! bytes flipped, cut, inserted and repeated, are opened, read to the end and profiled. Every
//! outcome is data or `Error::Invalid`, never a panic.

use std::io::Write;

use loopml_store::testing::mutate;
use proptest::prelude::*;

use super::*;

const CSV: &[u8] = include_bytes!("../../tests/corpus/small.csv");

fn parquet_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("s.csv");
    std::fs::write(&csv, CSV).expect("write");
    let r = BatchReader::open(&csv).expect("the corpus CSV reads");
    let schema = r.schema();
    let mut out = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).expect("writer");
        for b in r {
            w.write(&b.expect("batch")).expect("write batch");
        }
        w.close().expect("close");
    }
    out
}

/// Opens, reads and profiles `bytes` as a file named `name`: only data or `Invalid` may come out.
fn read_all(name: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write");
    match BatchReader::open(&path) {
        Ok(r) => {
            for b in r {
                if let Err(e) = b {
                    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
                    break;
                }
            }
        }
        Err(e) => assert!(matches!(e, Error::Invalid(_)), "{e:?}"),
    }
    match crate::profile::profile_file(&path) {
        Ok(_) | Err(Error::Invalid(_) | Error::Statistic(_)) => {}
        Err(e) => panic!("not a clean refusal: {e:?}"),
    }
}

#[test]
fn the_corpus_reads_as_csv_and_as_parquet() {
    read_all("s.csv", CSV);
    let pq = parquet_bytes();
    assert!(pq.starts_with(b"PAR1") && pq.len() > 100);
    read_all("s.parquet", &pq);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn mutated_csv_never_panics(ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..12)) {
        read_all("m.csv", &mutate(CSV, &ops));
    }

    #[test]
    fn mutated_parquet_never_panics(ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)) {
        thread_local!(static PQ: Vec<u8> = parquet_bytes());
        let bytes = PQ.with(|p| mutate(p, &ops));
        read_all("m.parquet", &bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read_all("a.csv", &bytes);
        let mut pq = b"PAR1".to_vec();
        pq.extend_from_slice(&bytes);
        pq.extend_from_slice(b"PAR1");
        read_all("a.parquet", &pq);
    }
}
