//! Dataset versions against a real SQLite file and a local artifact folder.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use loopml_data::versions::DatasetStore;
use loopml_store::testing::TestDatabase;

/// A dataset store on a fresh database (SQLite, or PostgreSQL under
/// `LOOPML_TEST_DATABASE_URL`); the database lives as long as the returned guard.
fn store(dir: &std::path::Path) -> (DatasetStore, TestDatabase) {
    let t = TestDatabase::new();
    let art = loopml_store::testing::test_artifact_store(dir);
    (DatasetStore::new(t.database(), art).unwrap(), t)
}

fn write_parquet(path: &std::path::Path, n: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, false),
        Field::new("city", DataType::Utf8, true),
    ]));
    let x = Float64Array::from((0..n).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
    let city = StringArray::from(
        (0..n)
            .map(|i| Some(["Paris", "Rome", "Oslo"][i % 3]))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(x), Arc::new(city)]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test]
async fn add_is_content_addressed_and_versions_count_up() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _db) = store(dir.path());
    let csv = dir.path().join("train.csv");
    std::fs::write(&csv, "x,y\n1,a\n2,b\n").unwrap();
    let v1 = s
        .add("churn", &csv, Some("train.csv".into()))
        .await
        .unwrap();
    assert_eq!(
        (v1.reference().as_str(), v1.rows, v1.columns),
        ("churn@1", 2, 2)
    );
    assert_eq!(v1.digest.len(), 64);
    // Same bytes again: the same version.
    let again = s.add("churn", &csv, None).await.unwrap();
    assert_eq!(again.version, 1);
    std::fs::write(&csv, "x,y\n1,a\n2,b\n3,c\n").unwrap();
    let v2 = s.add("churn", &csv, None).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.digest, v1.digest);

    let pq = dir.path().join("big.parquet");
    write_parquet(&pq, 1000);
    let v3 = s.add("churn", &pq, None).await.unwrap();
    assert_eq!(
        (v3.version, v3.rows, v3.format.as_str()),
        (3, 1000, "parquet")
    );
    let got = s.get("churn", None).await.unwrap();
    assert_eq!(got.version, 3);
    let profile = got.profile.clone().unwrap();
    assert_eq!(profile["rows"], 1000);
    assert_eq!(profile["columns"][0]["numeric"]["max"], 499.5);
    assert_eq!(profile["columns"][1]["distinct"], 3);

    // The stored bytes come back identical.
    let out = dir.path().join("out.parquet");
    s.download(&got, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&pq).unwrap());

    let all = s.list(None).await.unwrap();
    assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(s.find_by_digest(&v1.digest).await.unwrap().len(), 1);
    let err = s.get("churn", Some(9)).await.unwrap_err().to_string();
    assert!(err.contains("churn@9"), "{err}");
}

#[tokio::test]
async fn bad_files_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _db) = store(dir.path());
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let err = s.add("d", &empty, None).await.unwrap_err().to_string();
    assert!(err.contains("empty.csv") && err.contains("empty"), "{err}");
    let mut body = String::from("n\n");
    for i in 0..20_000 {
        body.push_str(&format!("{i}\n"));
    }
    body.push_str("not-a-number\n");
    let mixed = dir.path().join("mixed.csv");
    std::fs::write(&mixed, body).unwrap();
    let err = s.add("d", &mixed, None).await.unwrap_err().to_string();
    assert!(
        err.contains("mixed.csv") && err.contains("not-a-number"),
        "{err}"
    );
    assert!(s.list(None).await.unwrap().is_empty());
    assert!(s.add("../x", &mixed, None).await.is_err());
}

/// Two stores on one database (two replicas) adding different files to one dataset at once:
/// every add succeeds and the versions are 1..N, each once (the next number is read then
/// written, so the losers of a race retry).
#[allow(clippy::disallowed_methods)] // the race needs real concurrent tasks
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_from_two_stores_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestDatabase::new();
    let art = loopml_store::testing::test_artifact_store(dir.path());
    let a = DatasetStore::new(t.database(), art.clone()).unwrap();
    let b = DatasetStore::new(t.open_another(), art).unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let path = dir.path().join(format!("part{i}.csv"));
            std::fs::write(&path, format!("x,y\n{i},a\n")).unwrap();
            tokio::spawn(async move { s.add("raced", &path, None).await.unwrap().version })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=12).collect::<Vec<i64>>());
}
