//! The trace store on SQLite (and PostgreSQL when `LOOPML_TEST_DATABASE_URL` is set): spans
//! arriving before and after StartTraceV3, totals, every search prefix, paging, links,
//! deletion and assessments.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use loopml_store::testing::TestDatabase;
use loopml_traces::otlp::Span;
use loopml_traces::{Search, TraceInfo, TraceService};
use serde_json::json;

fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, attrs: serde_json::Value) -> Span {
    Span {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_span_id: parent.map(str::to_string),
        name: name.into(),
        start_ns: 1_700_000_000_000_000_000,
        end_ns: 1_700_000_000_250_000_000,
        attributes: attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        events: vec![],
        status_code: "STATUS_CODE_OK",
        status_message: String::new(),
        service: None,
    }
}

fn search(exp: i64, filter: &str) -> Search {
    Search {
        experiment_ids: vec![exp],
        filter: filter.into(),
        max_results: 100,
        ..Search::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_ingest_search_link_and_assess() {
    for db in TestDatabase::all() {
        let dir = tempfile_dir();
        let tracking = loopml_tracking::TrackingService::new(
            db.database(),
            loopml_store::ArtifactStore::local(dir.join("art")).unwrap(),
        )
        .unwrap();
        let exp = tracking
            .create_experiment(format!("t-{}", uuid()), None, vec![])
            .await
            .unwrap();
        let s = TraceService::new(tracking.clone()).unwrap();
        s.set_pricer(std::sync::Arc::new(|m: &str, i, o| {
            (m == "gpt-x").then_some(i as f64 * 0.01 + o as f64 * 0.02)
        }));
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        // Trace A: a root and an LLM child with token usage, spans first.
        s.log_spans(
            exp,
            None,
            vec![
                span(&a, "0000000000000001", None, "root", json!({
                    "mlflow.spanInputs": {"string_value": "{\"q\": \"hi\"}"}})),
                span(&a, "0000000000000002", Some("0000000000000001"), "llm", json!({
                    "mlflow.spanType": {"string_value": "\"LLM\""},
                    "mlflow.llm.model": {"string_value": "\"gpt-x\""},
                    "mlflow.chat.tokenUsage": {"string_value": "{\"input_tokens\": 10, \"output_tokens\": 5}"},
                    "tier": {"string_value": "gold"}})),
            ],
        )
        .await
        .unwrap();
        let t = s.get_info(&format!("tr-{a}")).await.unwrap();
        assert_eq!(t.state, "OK");
        assert_eq!(t.execution_ms, Some(250));
        assert_eq!(t.tags["mlflow.traceName"], "root");
        assert_eq!(t.tags["mlflow.trace.spansLocation"], "TRACKING_STORE");
        assert_eq!(t.request_preview.as_deref(), Some("{\"q\":\"hi\"}"));
        let j = t.to_json();
        let usage: serde_json::Value = serde_json::from_str(
            j["trace_metadata"]["mlflow.trace.tokenUsage"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(usage["total_tokens"], 15);
        assert!((t.cost.unwrap() - 0.2).abs() < 1e-9);

        // Trace B: StartTraceV3 first (in a run), spans after.
        let run = tracking
            .create_run(exp, None, None, None, vec![])
            .await
            .unwrap();
        let info = TraceInfo::from_json(&json!({"trace_id": format!("tr-{b}"),
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp.to_string()}},
            "request_time": "2026-12-01T10:00:00.000Z", "execution_duration": "1.5s", "state": "ERROR",
            "tags": {"env": "prod", "mlflow.traceName": "second"},
            "trace_metadata": {"mlflow.sourceRun": run.info.run_id, "mlflow.trace.session": "s1"}}))
        .unwrap();
        s.start_trace(info).await.unwrap();
        s.log_spans(
            exp,
            None,
            vec![span(&b, "0000000000000003", None, "root-b", json!({}))],
        )
        .await
        .unwrap();
        let t = s.get_info(&format!("tr-{b}")).await.unwrap();
        assert_eq!(t.state, "ERROR", "StartTraceV3 has the last word");
        assert_eq!(t.execution_ms, Some(1500));
        assert_eq!(t.tags["mlflow.traceName"], "second");

        let ids = |r: (Vec<TraceInfo>, Option<String>)| {
            r.0.into_iter().map(|t| t.trace_id).collect::<Vec<_>>()
        };
        let ta = format!("tr-{a}");
        let tb = format!("tr-{b}");
        for (filter, want) in [
            ("tags.env = 'prod'", vec![tb.clone()]),
            ("tags.env != 'prod'", vec![]),
            ("tags.env IS NULL", vec![ta.clone()]),
            ("status = 'ERROR'", vec![tb.clone()]),
            ("name = 'root'", vec![ta.clone()]),
            ("span.type = 'LLM'", vec![ta.clone()]),
            ("span.name LIKE 'll%'", vec![ta.clone()]),
            ("span.status = 'OK'", vec![ta.clone(), tb.clone()]),
            ("span.attributes.tier = 'gold'", vec![ta.clone()]),
            (
                "request_metadata.`mlflow.trace.session` = 's1'",
                vec![tb.clone()],
            ),
            (&format!("run_id = '{}'", run.info.run_id), vec![tb.clone()]),
            ("execution_time_ms > 1000", vec![tb.clone()]),
            ("text ILIKE '%HI%'", vec![ta.clone()]),
        ] {
            let mut got = ids(s.search(search(exp, filter)).await.unwrap());
            got.sort();
            assert_eq!(got, want, "{filter}");
        }
        // Newest first; pages walk every trace once.
        let page = s
            .search(Search {
                max_results: 1,
                ..search(exp, "")
            })
            .await
            .unwrap();
        assert_eq!(
            page.0[0].trace_id, tb,
            "B (2026) before A (2023): newest first"
        );
        let next = s
            .search(Search {
                max_results: 1,
                page_token: page.1.clone(),
                ..search(exp, "")
            })
            .await
            .unwrap();
        assert_eq!(next.0.len(), 1);
        assert!(next.1.is_none());
        assert!(s.search(search(exp, "span.weird = 'x'")).await.is_err());

        // Links.
        s.link_to_run(vec![ta.clone()], run.info.run_id.clone())
            .await
            .unwrap();
        s.link_to_run(vec![ta.clone()], run.info.run_id.clone())
            .await
            .unwrap();
        let mut got = ids(s
            .search(search(exp, &format!("run_id = '{}'", run.info.run_id)))
            .await
            .unwrap());
        got.sort();
        assert_eq!(got, vec![ta.clone(), tb.clone()]);
        s.link_prompts(ta.clone(), vec![("qa".into(), "2".into())])
            .await
            .unwrap();
        assert_eq!(
            ids(s.search(search(exp, "prompt = 'qa/2'")).await.unwrap()),
            vec![ta.clone()]
        );
        assert!(
            s.link_to_run(vec!["tr-missing".into()], run.info.run_id.clone())
                .await
                .is_err()
        );

        // Assessments: create, override, numeric search, update by mask, delete.
        let f = s
            .create_assessment(
                &ta,
                json!({"assessment_name": "score", "feedback": {"value": 0.9},
                "source": {"source_type": "LLM_JUDGE", "source_id": "judge"}}),
            )
            .await
            .unwrap();
        let fid = f["assessment_id"].as_str().unwrap().to_string();
        assert!(fid.starts_with("a-"));
        assert_eq!(
            ids(s.search(search(exp, "feedback.score > 0.5")).await.unwrap()),
            vec![ta.clone()]
        );
        let o = s
            .create_assessment(
                &ta,
                json!({"assessment_name": "score", "feedback": {"value": 0.1},
                "overrides": fid}),
            )
            .await
            .unwrap();
        assert_eq!(s.get_assessment(&ta, &fid).await.unwrap()["valid"], false);
        assert!(ids(s.search(search(exp, "feedback.score > 0.5")).await.unwrap()).is_empty());
        let oid = o["assessment_id"].as_str().unwrap().to_string();
        let u = s
            .update_assessment(
                &ta,
                &oid,
                json!({"rationale": "better", "feedback": {"value": 0.7}}),
                "rationale,feedback",
            )
            .await
            .unwrap();
        assert_eq!(u["rationale"], "better");
        assert_eq!(
            ids(s
                .search(search(exp, "feedback.score >= 0.7"))
                .await
                .unwrap()),
            vec![ta.clone()]
        );
        assert!(
            s.update_assessment(&ta, &oid, json!({}), "traceId")
                .await
                .is_err()
        );
        s.delete_assessment(&ta, &oid).await.unwrap();
        assert!(s.get_assessment(&ta, &oid).await.is_err());

        // The search page written straight from the rows is the infos' own JSON (token usage,
        // cost, assessments, previews and durations included).
        for filter in ["", "tags.env = 'prod'"] {
            let (infos, _) = s.search(search(exp, filter)).await.unwrap();
            assert!(!infos.is_empty());
            let page: serde_json::Value =
                serde_json::from_str(&s.search_json(search(exp, filter)).await.unwrap()).unwrap();
            let want: Vec<serde_json::Value> = infos.iter().map(TraceInfo::to_json).collect();
            assert_eq!(page["traces"], serde_json::Value::Array(want), "{filter}");
        }

        // Tags and deletion.
        s.set_tag(&ta, "reviewed", "yes").await.unwrap();
        assert_eq!(
            ids(s
                .search(search(exp, "tags.reviewed = 'yes'"))
                .await
                .unwrap()),
            vec![ta.clone()]
        );
        s.delete_tag(&ta, "reviewed").await.unwrap();
        assert!(s.delete_tag(&ta, "reviewed").await.is_err());
        assert_eq!(
            s.delete_traces(exp, Some(vec![ta.clone(), "tr-none".into()]), None, None)
                .await
                .unwrap(),
            1
        );
        assert!(s.get_info(&ta).await.is_err());
        assert_eq!(
            s.delete_traces(exp, None, Some(i64::MAX), Some(10))
                .await
                .unwrap(),
            1
        );
        assert!(ids(s.search(search(exp, "")).await.unwrap()).is_empty());
    }
}

fn uuid() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("loopml-traces-{}", uuid()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Tag equality searches read their page from the pairs' own (experiment, time) columns: those
/// must follow the trace's time whichever request set it last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_searches_follow_a_trace_whose_time_moves() {
    for db in TestDatabase::all() {
        let dir = tempfile_dir();
        let tracking = loopml_tracking::TrackingService::new(
            db.database(),
            loopml_store::ArtifactStore::local(dir.join("art")).unwrap(),
        )
        .unwrap();
        let exp = tracking
            .create_experiment(format!("t-{}", uuid()), None, vec![])
            .await
            .unwrap();
        let s = TraceService::new(tracking.clone()).unwrap();
        let start = |id: &str, ms: i64| {
            TraceInfo::from_json(&json!({"trace_id": format!("tr-{}", id.repeat(32)),
                "trace_location": {"type": "MLFLOW_EXPERIMENT",
                    "mlflow_experiment": {"experiment_id": exp.to_string()}},
                "request_time": ms, "state": "OK", "tags": {"env": "prod"},
                "trace_metadata": {"team": "search"}}))
            .unwrap()
        };
        // x: spans first (their time: 1,700,000,000,000 ms), then StartTraceV3 moves it later.
        s.log_spans(
            exp,
            None,
            vec![span(
                &"1".repeat(32),
                "0000000000000001",
                None,
                "x",
                json!({}),
            )],
        )
        .await
        .unwrap();
        s.start_trace(start("1", 1_700_000_005_000)).await.unwrap();
        s.start_trace(start("2", 1_700_000_003_000)).await.unwrap();
        s.start_trace(start("3", 1_700_000_004_000)).await.unwrap();
        // w: tagged at 2,000, then its StartTraceV3 is sent again with a later time.
        s.start_trace(start("4", 1_700_000_002_000)).await.unwrap();
        s.start_trace(start("4", 1_700_000_006_000)).await.unwrap();
        // A trace without the tag value.
        let mut other = start("5", 1_700_000_007_000);
        other.tags.insert("env".into(), "dev".into());
        s.start_trace(other).await.unwrap();
        let page = |filter: &str, order: Vec<String>, max: usize, token: Option<String>| {
            let s = s.clone();
            let filter = filter.to_string();
            async move {
                let (infos, next) = s
                    .search(Search {
                        experiment_ids: vec![exp],
                        filter,
                        max_results: max,
                        order_by: order,
                        page_token: token,
                    })
                    .await
                    .unwrap();
                let ids: Vec<String> = infos.iter().map(|t| t.trace_id[3..4].to_string()).collect();
                (ids, next)
            }
        };
        for filter in ["tags.env = 'prod'", "metadata.team = 'search'"] {
            let (ids, _) = page(filter, vec![], 100, None).await;
            let want = if filter.starts_with("tags") {
                vec!["4", "1", "3", "2"]
            } else {
                vec!["5", "4", "1", "3", "2"]
            };
            assert_eq!(ids, want, "{filter} on {}", db.database().backend());
        }
        let (ids, _) = page(
            "tags.env = 'prod'",
            vec!["timestamp_ms ASC".into()],
            100,
            None,
        )
        .await;
        assert_eq!(ids, ["2", "3", "1", "4"]);
        // Pages of two walk every match once, in order.
        let (first, next) = page("tags.env = 'prod'", vec![], 2, None).await;
        let (second, last) = page("tags.env = 'prod'", vec![], 2, next).await;
        assert_eq!([first, second].concat(), ["4", "1", "3", "2"]);
        assert!(last.is_none());
        // Another clause beside the equality still applies.
        let (ids, _) = page(
            "tags.env = 'prod' AND timestamp_ms < 1700000004500",
            vec![],
            100,
            None,
        )
        .await;
        assert_eq!(ids, ["3", "2"]);
        // Spans of a trace of this experiment cannot be logged to another one.
        let other = tracking
            .create_experiment(format!("t-{}", uuid()), None, vec![])
            .await
            .unwrap();
        let moved = s
            .log_spans(
                other,
                None,
                vec![span(
                    &"1".repeat(32),
                    "0000000000000009",
                    None,
                    "y",
                    json!({}),
                )],
            )
            .await;
        assert!(moved.is_err(), "{moved:?}");
        assert_eq!(
            s.get_info(&format!("tr-{}", "1".repeat(32)))
                .await
                .unwrap()
                .experiment_id,
            exp
        );
    }
}
