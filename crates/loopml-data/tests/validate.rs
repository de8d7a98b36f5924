//! Expectation suites: every expectation passing and failing on small CSV and Parquet files.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use loopml_data::Error;
use loopml_data::profile::profile_file;
use loopml_data::validate::{
    Suite, ValidationResult, files_in, suggest_suite, validate_file, validate_with_suite_file,
};
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const PEOPLE: &str = "\
id,age,city,email,signup,a,b,score
1,34,Paris,ann@x.org,05/01/2024,1,x,10
2,,Rome,bob@y.com,29/02/2024,1,y,20
3,51,Paris,carl-at-home,01/13/2024,2,x,30
4,17,Atlantis,dee@z.net,29/02/2023,2,y,40
5,150,Rome,eve@w.io,31/12/2024,1,x,50
";

fn people(dir: &Path) -> PathBuf {
    write(dir, "people.csv", PEOPLE)
}

fn run(dir: &Path, data: &Path, yaml: &str) -> ValidationResult {
    let suite = Suite::from_yaml(yaml, "suite.yml").unwrap();
    validate_file(data, &suite, &files_in(dir)).unwrap()
}

/// Runs a one-expectation suite and returns (success, result JSON).
fn one(dir: &Path, data: &Path, entry: &str) -> (bool, Value) {
    let r = run(dir, data, &format!("name: t\nexpectations:\n  - {entry}\n"));
    assert_eq!(r.results.len(), 1);
    let j = r.to_json();
    (r.success, j["results"][0].clone())
}

#[test]
fn every_expectation_passes_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = people(d);
    let cases: &[(&str, bool)] = &[
        ("expect_column_to_exist: {column: age}", true),
        ("expect_column_to_exist: {column: nope}", false),
        (
            "expect_table_columns_to_match_set: {column_set: [id, age, city, email, signup, a, b, score]}",
            true,
        ),
        (
            "expect_table_columns_to_match_set: {column_set: [id, age]}",
            false,
        ),
        (
            "expect_table_columns_to_match_set: {column_set: [id, age], exact_match: false}",
            true,
        ),
        (
            "expect_table_row_count_to_be_between: {min_value: 1, max_value: 5}",
            true,
        ),
        (
            "expect_table_row_count_to_be_between: {min_value: 1, max_value: 5, strict_max: true}",
            false,
        ),
        ("expect_column_values_to_not_be_null: {column: id}", true),
        ("expect_column_values_to_not_be_null: {column: age}", false),
        (
            "expect_column_values_to_not_be_null: {column: age, mostly: 0.8}",
            true,
        ),
        ("expect_column_values_to_be_null: {column: age}", false),
        (
            "expect_column_values_to_be_between: {column: age, min_value: 0, max_value: 200}",
            true,
        ),
        (
            "expect_column_values_to_be_between: {column: age, min_value: 18, max_value: 120}",
            false,
        ),
        (
            "expect_column_values_to_be_between: {column: age, min_value: 17, max_value: 150, strict_min: true}",
            false,
        ),
        (
            "expect_column_values_to_be_in_set: {column: city, value_set: [Paris, Rome, Atlantis]}",
            true,
        ),
        (
            "expect_column_values_to_be_in_set: {column: city, value_set: [Paris, Rome]}",
            false,
        ),
        (
            "expect_column_values_to_be_in_set: {column: id, value_set: [1, 2, '3', 4, 5.0]}",
            true,
        ),
        (
            "expect_column_values_to_not_be_in_set: {column: city, value_set: [Berlin]}",
            true,
        ),
        (
            "expect_column_values_to_not_be_in_set: {column: city, value_set: [Atlantis]}",
            false,
        ),
        (
            "expect_column_values_to_match_regex: {column: email, regex: '^[^@]+@[^@]+$'}",
            false,
        ),
        (
            "expect_column_values_to_match_regex: {column: email, regex: '^[^@]+@[^@]+$', mostly: 0.8}",
            true,
        ),
        (
            "expect_column_values_to_not_match_regex: {column: email, regex: 'example'}",
            true,
        ),
        ("expect_column_values_to_be_unique: {column: id}", true),
        ("expect_column_values_to_be_unique: {column: city}", false),
        (
            "expect_compound_columns_to_be_unique: {column_list: [a, b]}",
            false,
        ),
        (
            "expect_compound_columns_to_be_unique: {column_list: [a, b, id]}",
            true,
        ),
        (
            "expect_column_values_to_be_of_type: {column: age, type_: int}",
            true,
        ),
        (
            "expect_column_values_to_be_of_type: {column: city, type_: string}",
            true,
        ),
        (
            "expect_column_values_to_be_of_type: {column: city, type_: float}",
            false,
        ),
        (
            "expect_column_mean_to_be_between: {column: score, min_value: 29, max_value: 31}",
            true,
        ),
        (
            "expect_column_mean_to_be_between: {column: score, min_value: 31}",
            false,
        ),
        (
            "expect_column_median_to_be_between: {column: score, min_value: 30, max_value: 30}",
            true,
        ),
        (
            "expect_column_median_to_be_between: {column: score, max_value: 29}",
            false,
        ),
        (
            "expect_column_stdev_to_be_between: {column: score, min_value: 15.8, max_value: 15.9}",
            true,
        ),
        (
            "expect_column_stdev_to_be_between: {column: score, max_value: 1}",
            false,
        ),
        (
            "expect_column_min_to_be_between: {column: score, min_value: 10, max_value: 10}",
            true,
        ),
        (
            "expect_column_min_to_be_between: {column: score, min_value: 10, strict_min: true}",
            false,
        ),
        (
            "expect_column_max_to_be_between: {column: score, min_value: 50}",
            true,
        ),
        (
            "expect_column_max_to_be_between: {column: score, max_value: 49}",
            false,
        ),
        (
            "expect_column_sum_to_be_between: {column: score, min_value: 150, max_value: 150}",
            true,
        ),
        (
            "expect_column_quantile_values_to_be_between: {column: score, quantile_ranges: {quantiles: [0.25, 0.5], value_ranges: [[19, 21], [null, 30]]}}",
            true,
        ),
        (
            "expect_column_quantile_values_to_be_between: {column: score, quantile_ranges: {quantiles: [0.25, 0.5], value_ranges: [[19, 21], [31, null]]}}",
            false,
        ),
        (
            "expect_column_distinct_values_to_be_in_set: {column: city, value_set: [Paris, Rome, Atlantis, Oslo]}",
            true,
        ),
        (
            "expect_column_distinct_values_to_be_in_set: {column: city, value_set: [Paris, Rome]}",
            false,
        ),
        (
            "expect_column_distinct_values_to_equal_set: {column: city, value_set: [Paris, Rome, Atlantis]}",
            true,
        ),
        (
            "expect_column_distinct_values_to_equal_set: {column: city, value_set: [Paris, Rome, Atlantis, Oslo]}",
            false,
        ),
        (
            "expect_column_distinct_values_to_contain_set: {column: city, value_set: [Paris]}",
            true,
        ),
        (
            "expect_column_distinct_values_to_contain_set: {column: city, value_set: [Oslo]}",
            false,
        ),
        (
            "expect_column_value_lengths_to_be_between: {column: city, min_value: 4, max_value: 8}",
            true,
        ),
        (
            "expect_column_value_lengths_to_be_between: {column: city, min_value: 5}",
            false,
        ),
        (
            "expect_column_values_to_match_strftime_format: {column: signup, strftime_format: '%d/%m/%Y'}",
            false,
        ),
        (
            "expect_column_values_to_match_strftime_format: {column: signup, strftime_format: '%d/%m/%Y', mostly: 0.6}",
            true,
        ),
        (
            "expect_column_pair_values_a_to_be_greater_than_b: {column_A: score, column_B: id}",
            true,
        ),
        (
            "expect_column_pair_values_a_to_be_greater_than_b: {column_A: id, column_B: a}",
            false,
        ),
        (
            "expect_column_pair_values_a_to_be_greater_than_b: {column_A: id, column_B: a, or_equal: true}",
            true,
        ),
        // GX's default keeps rows where only one side is missing, and they fail.
        (
            "expect_column_pair_values_a_to_be_greater_than_b: {column_A: age, column_B: id}",
            false,
        ),
        (
            "expect_column_pair_values_a_to_be_greater_than_b: {column_A: age, column_B: id, ignore_row_if: either_value_is_missing}",
            true,
        ),
        (
            "expect_column_pair_values_a_to_be_greater_than_b: {column_A: age, column_B: id, ignore_row_if: neither}",
            false,
        ),
        (
            "expect_table_row_count_to_be_between: {min_value: 5, max_value: 5}",
            true,
        ),
    ];
    let mut wrong = Vec::new();
    for (entry, want) in cases {
        let (got, j) = one(d, &f, entry);
        if got != *want {
            wrong.push(format!("{entry}: expected {want}, got {j}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn map_results_are_gx_shaped_and_nulls_count_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let f = people(dir.path());
    let (ok, j) = one(
        dir.path(),
        &f,
        "expect_column_values_to_be_between: {column: age, min_value: 18, max_value: 120, mostly: 0.5}",
    );
    assert!(ok);
    assert_eq!(j["expectation_type"], "expect_column_values_to_be_between");
    assert_eq!(j["kwargs"]["column"], "age");
    assert_eq!(j["kwargs"]["mostly"], 0.5);
    let r = &j["result"];
    assert_eq!(r["element_count"], 5);
    assert_eq!(r["missing_count"], 1);
    assert_eq!(r["unexpected_count"], 2);
    // Percent of the 4 non-null values, not of the 5 rows.
    assert_eq!(r["unexpected_percent"], 50.0);
    assert_eq!(r["partial_unexpected_list"], json!([17, 150]));

    let (ok, j) = one(
        dir.path(),
        &f,
        "expect_column_values_to_not_be_null: {column: age}",
    );
    assert!(!ok);
    assert_eq!(j["result"]["unexpected_count"], 1);
    assert_eq!(j["result"]["unexpected_percent"], 20.0);
    assert_eq!(j["result"]["partial_unexpected_list"], json!([null]));

    // mostly at exactly the pass fraction holds (4 of 5 = 0.8).
    let (ok, _) = one(
        dir.path(),
        &f,
        "expect_column_values_to_not_be_null: {column: age, mostly: 0.8}",
    );
    assert!(ok);
    let (ok, _) = one(
        dir.path(),
        &f,
        "expect_column_values_to_not_be_null: {column: age, mostly: 0.81}",
    );
    assert!(!ok);
}

#[test]
fn unique_and_compound_unique_list_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let f = people(dir.path());
    let (_, j) = one(
        dir.path(),
        &f,
        "expect_column_values_to_be_unique: {column: city}",
    );
    // Every row of a duplicated value is unexpected: Paris ×2, Rome ×2.
    assert_eq!(j["result"]["unexpected_count"], 4);
    let (_, j) = one(
        dir.path(),
        &f,
        "expect_compound_columns_to_be_unique: {column_list: [a, b]}",
    );
    // Only (1, x) repeats, on rows 1 and 5.
    assert_eq!(j["result"]["unexpected_count"], 2);
    let list = j["result"]["partial_unexpected_list"].as_array().unwrap();
    assert!(list.contains(&json!([1, "x"])));
}

#[test]
fn aggregates_report_observed_values() {
    let dir = tempfile::tempdir().unwrap();
    let f = people(dir.path());
    let (_, j) = one(
        dir.path(),
        &f,
        "expect_column_quantile_values_to_be_between: {column: score, quantile_ranges: {quantiles: [0.25, 0.5, 0.9], value_ranges: [[null, null], [null, null], [null, null]]}}",
    );
    assert_eq!(j["result"]["observed_value"]["values"], json!([20, 30, 46]));
    let (_, j) = one(
        dir.path(),
        &f,
        "expect_table_row_count_to_be_between: {min_value: 1}",
    );
    assert_eq!(j["result"]["observed_value"], 5);
    // Aggregates drop nulls: mean of 34, 51, 17, 150.
    let (_, j) = one(
        dir.path(),
        &f,
        "expect_column_mean_to_be_between: {column: age}",
    );
    assert_eq!(j["result"]["observed_value"], 63);
}

#[test]
fn missing_column_fails_only_its_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let f = people(dir.path());
    let r = run(
        dir.path(),
        &f,
        "name: t\nexpectations:\n  - expect_column_values_to_not_be_null: {column: ghost}\n  - expect_column_values_to_not_be_null: {column: id}\n  - expect_column_mean_to_be_between: {column: city, min_value: 0}\n",
    );
    assert!(!r.success);
    assert!(!r.results[0].success);
    let msg = &r.results[0]
        .exception_info
        .as_ref()
        .unwrap()
        .exception_message;
    assert!(msg.contains("'ghost' does not exist"), "{msg}");
    assert!(r.results[1].success);
    // The mean of a text column is an exception of that expectation, not of the suite.
    assert!(r.results[2].exception_info.is_some());
    let s = &r.statistics;
    assert_eq!(
        (
            s.evaluated_expectations,
            s.successful_expectations,
            s.unsuccessful_expectations
        ),
        (3, 1, 2)
    );
    assert!((s.success_percent - 100.0 / 3.0).abs() < 1e-9);
    let text = r.summary();
    assert!(
        text.contains("✗ expect_column_values_to_not_be_null ghost"),
        "{text}"
    );
    assert!(
        text.contains("✓ expect_column_values_to_not_be_null id"),
        "{text}"
    );
    assert!(text.contains("1/3 expectations passed"), "{text}");
}

#[test]
fn bad_yaml_names_the_file_and_entry() {
    let err = Suite::from_yaml("name: [unclosed", "suites/churn.yml").unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("suites/churn.yml")),
        "{err}"
    );
    let yaml = "name: t\nexpectations:\n  - expect_column_to_exist: {column: a}\n  - expect_column_to_be_awesome: {column: a}\n";
    let err = Suite::from_yaml(yaml, "churn.yml").unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("churn.yml") && m.contains("expectation 1") && m.contains("expect_column_to_be_awesome")),
        "{err}"
    );
    let yaml = "name: t\nexpectations:\n  - expect_column_values_to_not_be_null: {colum: a}\n";
    let err = Suite::from_yaml(yaml, "churn.yml").unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("expectation 0")),
        "{err}"
    );
    let yaml = "name: t\nexpectations:\n  - expect_column_values_to_match_regex: {column: a, regex: '('}\n";
    assert!(Suite::from_yaml(yaml, "churn.yml").is_err());
    let yaml =
        "name: t\nexpectations:\n  - expect_column_values_to_not_be_null: {column: a, mostly: 2}\n";
    assert!(Suite::from_yaml(yaml, "churn.yml").is_err());
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[test]
fn foreign_key_set_from_another_file_and_parquet_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("ref")).unwrap();
    write(d, "ref/customers.csv", "customer_id,name\n1,a\n2,b\n3,c\n");
    let schema = Arc::new(Schema::new(vec![
        Field::new("order", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("tag", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![10, 11, 12, 13])),
            Arc::new(Int64Array::from(vec![Some(1), Some(3), None, Some(9)])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("b"),
                Some("c"),
            ])),
        ],
    )
    .unwrap();
    let orders = d.join("orders.parquet");
    write_parquet(&orders, &batch);
    let suite_file = write(
        d,
        "ref/suite.yml",
        "name: orders\nexpectations:\n  - expect_column_values_to_be_in_set: {column: customer_id, value_set_from: {file: customers.csv, column: customer_id}}\n  - expect_column_values_to_be_in_set: {column: customer_id, value_set_from: {file: customers.csv, column: customer_id}, mostly: 0.6}\n  - expect_column_values_to_be_in_set: {column: customer_id, value_set_from: {file: missing.csv, column: customer_id}}\n  - expect_column_values_to_be_of_type: {column: customer_id, type_: int}\n",
    );
    let r = validate_with_suite_file(&orders, &suite_file).unwrap();
    let j = r.to_json();
    assert_eq!(j["results"][0]["success"], false);
    assert_eq!(j["results"][0]["result"]["unexpected_count"], 1);
    assert_eq!(j["results"][0]["result"]["missing_count"], 1);
    assert_eq!(
        j["results"][0]["result"]["partial_unexpected_list"],
        json!([9])
    );
    assert_eq!(j["results"][1]["success"], true);
    assert_eq!(j["results"][2]["success"], false);
    assert!(r.results[2].exception_info.is_some());
    assert_eq!(j["results"][3]["success"], true);
    assert_eq!(j["statistics"]["evaluated_expectations"], 4);
}

#[test]
fn all_null_columns_pass_vacuously() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec![None::<&str>, None]))],
    )
    .unwrap();
    let f = dir.path().join("n.parquet");
    write_parquet(&f, &batch);
    let (ok, j) = one(
        dir.path(),
        &f,
        "expect_column_values_to_be_in_set: {column: x, value_set: [a]}",
    );
    assert!(ok, "{j}");
    assert_eq!(j["result"]["missing_count"], 2);
    assert_eq!(j["result"]["unexpected_percent"], 0.0);
}

#[test]
fn suggested_suite_round_trips_and_passes_on_its_reference() {
    let dir = tempfile::tempdir().unwrap();
    let f = people(dir.path());
    let profile = profile_file(&f).unwrap();
    let suite = suggest_suite("people", &profile);
    let yaml = suite.to_yaml();
    let back = Suite::from_yaml(&yaml, "suggested.yml").unwrap();
    assert_eq!(back, suite);
    let types: Vec<String> = suite
        .expectations
        .iter()
        .map(|e| e.expectation_type())
        .collect();
    assert!(types.contains(&"expect_column_values_to_be_unique".to_string()));
    assert!(types.contains(&"expect_column_values_to_be_in_set".to_string()));
    assert!(yaml.contains("\"mostly\":0.8"), "{yaml}");
    let r = validate_file(&f, &suite, &files_in(dir.path())).unwrap();
    assert!(r.success, "{}", r.summary());
    // A shifted dataset breaks the suggested ranges and sets.
    let g = write(
        dir.path(),
        "shifted.csv",
        &PEOPLE.replace("Rome", "Madrid").replace(",34,", ",340,"),
    );
    let r = validate_file(&g, &suite, &files_in(dir.path())).unwrap();
    assert!(!r.success);
}
