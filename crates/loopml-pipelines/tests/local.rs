//! Pipelines run locally with real `sh` commands and no tracking server: parallelism, live
//! logs, failure propagation, timeouts, retries, the step cache, step outputs, validation.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopml_pipelines::{Outcome, Pipeline, RunOptions, RunReport, StepStatus, run, run_step};

type Lines = Arc<Mutex<Vec<(String, String, Instant)>>>;

fn pipeline(dir: &Path, yaml: &str) -> Pipeline {
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, yaml).unwrap();
    Pipeline::load(&file).unwrap()
}

fn options() -> (RunOptions, Lines) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let opts = RunOptions {
        jobs: 4,
        log: Arc::new(move |step: &str, line: &str| {
            sink.lock()
                .unwrap()
                .push((step.to_string(), line.to_string(), Instant::now()));
        }),
        ..Default::default()
    };
    (opts, lines)
}

async fn go(p: &Pipeline) -> (RunReport, Lines) {
    let (opts, lines) = options();
    (run(p, &opts).await.unwrap(), lines)
}

fn status(r: &RunReport, step: &str) -> StepStatus {
    r.step(step).unwrap().status
}

fn step_lines(lines: &Lines, step: &str) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, l, _)| s == step && !l.starts_with("loopml:"))
        .map(|(_, l, _)| l.clone())
        .collect()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

#[tokio::test]
async fn independent_steps_run_in_parallel_up_to_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: par\nsteps:\n  - {name: a, run: sleep 0.5}\n  - {name: b, run: sleep 0.5}\n  - {name: c, needs: [a, b], run: echo done}\n",
    );
    let t = Instant::now();
    let (r, lines) = go(&p).await;
    let took = t.elapsed();
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert!(
        took < Duration::from_millis(900),
        "a and b overlapped: {took:?}"
    );
    assert_eq!(step_lines(&lines, "c"), vec!["done"]);
    // One job at a time: they cannot overlap.
    let (mut opts, _) = options();
    opts.jobs = 1;
    opts.no_cache = true;
    let t = Instant::now();
    let r = run(&p, &opts).await.unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded);
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn logs_stream_live_per_step_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: logs\nsteps:\n  - name: talk\n    run: |\n      for i in 1 2 3 4 5; do echo out$i; sleep 0.1; done\n      echo err1 >&2\n  - {name: other, run: 'echo hello; echo world'}\n",
    );
    let (r, lines) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Succeeded);
    assert_eq!(
        step_lines(&lines, "talk"),
        vec!["out1", "out2", "out3", "out4", "out5", "err1"]
    );
    assert_eq!(step_lines(&lines, "other"), vec!["hello", "world"]);
    let all = lines.lock().unwrap();
    let at = |l: &str| all.iter().find(|(_, x, _)| x == l).unwrap().2;
    assert!(
        at("out5") - at("out1") >= Duration::from_millis(300),
        "lines arrive as they are printed, not at the end"
    );
    assert!(
        all.iter()
            .any(|(s, l, _)| s == "talk" && l.contains("SUCCEEDED"))
    );
}

#[tokio::test]
async fn a_failing_step_skips_its_dependents_but_not_a_sibling_branch() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: fail\nsteps:\n  - {name: a, run: 'echo boom >&2; exit 3'}\n  - {name: b, needs: [a], run: touch b.ran}\n  - {name: c, needs: [b], run: touch c.ran}\n  - {name: d, run: 'sleep 0.3; touch d.ran'}\n  - {name: e, needs: [d], run: touch e.ran}\n",
    );
    let (r, lines) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.exit_code(), 1);
    assert_eq!(status(&r, "a"), StepStatus::Failed);
    assert!(
        r.step("a")
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("code 3")
    );
    assert_eq!(step_lines(&lines, "a"), vec!["boom"]);
    assert_eq!(status(&r, "b"), StepStatus::Skipped);
    assert!(
        r.step("b")
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("`a` failed")
    );
    assert_eq!(status(&r, "c"), StepStatus::Skipped);
    assert!(
        r.step("c")
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("`b` was skipped")
    );
    assert_eq!(status(&r, "d"), StepStatus::Succeeded);
    assert_eq!(status(&r, "e"), StepStatus::Succeeded);
    assert!(!dir.path().join("b.ran").exists());
    assert!(!dir.path().join("c.ran").exists());
    assert!(dir.path().join("e.ran").exists());
}

#[tokio::test]
async fn a_hanging_step_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: hang\nsteps:\n  - name: stuck\n    run: 'sleep 30 & echo $! > bg.pid; sleep 30'\n    timeout: 1s\n  - {name: after, needs: [stuck], run: touch after.ran}\n",
    );
    let t = Instant::now();
    let (r, _) = go(&p).await;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(took >= Duration::from_millis(1000), "took {took:?}");
    assert_eq!(r.outcome, Outcome::Failed);
    let s = r.step("stuck").unwrap();
    assert_eq!(s.status, StepStatus::Failed);
    assert!(
        s.message.as_ref().unwrap().contains("timed out after 1s"),
        "{s:?}"
    );
    assert_eq!(status(&r, "after"), StepStatus::Skipped);
    // The background `sleep` died with the group.
    let pid = read(dir.path(), "bg.pid").trim().to_string();
    assert!(!pid.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Gone, or a zombie waiting for an init that does not reap (as in some containers).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    assert!(
        matches!(state, None | Some('Z' | 'X')),
        "background child {pid} still runs: {stat}"
    );
}

#[tokio::test]
async fn retries_rerun_a_failed_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let flaky =
        "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo attempt $n; [ $n -ge 2 ]";
    let p = pipeline(
        dir.path(),
        &format!(
            "name: retry\nsteps:\n  - name: flaky\n    run: '{flaky}'\n    retries: 2\n    cache: false\n"
        ),
    );
    let (r, lines) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(r.step("flaky").unwrap().attempts, 2);
    assert_eq!(step_lines(&lines, "flaky"), vec!["attempt 1", "attempt 2"]);
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l, _)| l.contains("retrying (1/2)"))
    );
    // Without retries the first failure is final.
    std::fs::remove_file(dir.path().join("n")).unwrap();
    let p = pipeline(
        dir.path(),
        &format!("name: retry\nsteps:\n  - name: flaky\n    run: '{flaky}'\n"),
    );
    let (r, _) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.step("flaky").unwrap().attempts, 1);
}

const CACHED: &str = r#"name: cached
params: {rows: "3"}
steps:
  - name: prep
    run: echo prep >> prep.count && cat raw.txt > clean.txt && echo rows=${params.rows} >> "$LOOPML_STEP_OUTPUTS"
    inputs: [raw.txt]
    outputs: [clean.txt]
  - name: train
    needs: [prep]
    run: echo train >> train.count && cat clean.txt code.py > model.txt
    inputs: [clean.txt, code.py]
    outputs: [model.txt]
  - name: report
    needs: [train]
    run: echo rows=${steps.prep.rows} > report.txt
    cache: false
"#;

fn counts(dir: &Path) -> (usize, usize) {
    (
        read(dir, "prep.count").lines().count(),
        read(dir, "train.count").lines().count(),
    )
}

#[tokio::test]
async fn unchanged_steps_are_cached_and_changes_rerun_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("raw.txt"), "a,b\n").unwrap();
    std::fs::write(d.join("code.py"), "v1\n").unwrap();
    let p = pipeline(d, CACHED);
    let (r, _) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(counts(d), (1, 1));
    assert!(d.join(".loopml/cached.lock").exists());

    // Nothing changed: the commands do not run; published outputs come from the lock file.
    let (r, lines) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Succeeded);
    assert_eq!(status(&r, "prep"), StepStatus::Cached);
    assert_eq!(status(&r, "train"), StepStatus::Cached);
    assert_eq!(status(&r, "report"), StepStatus::Succeeded, "cache: false");
    assert_eq!(counts(d), (1, 1));
    assert_eq!(r.step("prep").unwrap().outputs["rows"], "3");
    assert_eq!(read(d, "report.txt"), "rows=3\n");
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|(s, l, _)| s == "prep" && l.contains("CACHED"))
    );

    // A changed input of train re-runs train only.
    std::fs::write(d.join("code.py"), "v2\n").unwrap();
    let (r, _) = go(&p).await;
    assert_eq!(status(&r, "prep"), StepStatus::Cached);
    assert_eq!(status(&r, "train"), StepStatus::Succeeded);
    assert_eq!(counts(d), (1, 2));

    // A changed input of prep re-runs prep and everything downstream.
    std::fs::write(d.join("raw.txt"), "a,b\n1,2\n").unwrap();
    let (r, _) = go(&p).await;
    assert_eq!(status(&r, "prep"), StepStatus::Succeeded);
    assert_eq!(status(&r, "train"), StepStatus::Succeeded);
    assert_eq!(counts(d), (2, 3));
    assert!(read(d, "model.txt").contains("1,2"));

    // An output edited or removed behind the cache's back is rebuilt.
    std::fs::write(d.join("model.txt"), "tampered").unwrap();
    let (r, _) = go(&p).await;
    assert_eq!(status(&r, "prep"), StepStatus::Cached);
    assert_eq!(status(&r, "train"), StepStatus::Succeeded);
    assert_eq!(counts(d), (2, 4));

    // A param change re-runs every command step (all of them see every param).
    let (mut opts, _) = options();
    opts.params = BTreeMap::from([("rows".to_string(), "4".to_string())]);
    let r = run(&p, &opts).await.unwrap();
    assert_eq!(status(&r, "prep"), StepStatus::Succeeded);
    assert_eq!(status(&r, "train"), StepStatus::Succeeded);
    assert_eq!(read(d, "report.txt"), "rows=4\n");
    assert_eq!(counts(d), (3, 5));

    // no_cache forces execution.
    let (mut opts, _) = options();
    opts.params = BTreeMap::from([("rows".to_string(), "4".to_string())]);
    opts.no_cache = true;
    let r = run(&p, &opts).await.unwrap();
    assert_eq!(status(&r, "prep"), StepStatus::Succeeded);
    assert_eq!(counts(d), (4, 6));
}

#[tokio::test]
async fn step_outputs_and_environment_reach_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(
        d,
        r#"name: env-test
params: {rows: 10, data: in.csv}
env: {SEED: "7", DATA_COPY: "${params.data}"}
steps:
  - name: a
    run: |
      echo "x=42" >> "$LOOPML_STEP_OUTPUTS"
      echo "url=http://h/?a=b" >> "$LOOPML_STEP_OUTPUTS"
  - name: b
    needs: [a]
    run: echo "${steps.a.x} $LOOPML_PIPELINE $LOOPML_STEP $LOOPML_PARAM_ROWS $LOOPML_PARAM_DATA $SEED $DATA_COPY $FROM_OPTS ${steps.a.url}" > b.txt
"#,
    );
    let (mut opts, _) = options();
    opts.env = vec![("FROM_OPTS".into(), "window-9".into())];
    opts.params = BTreeMap::from([("rows".to_string(), "20".to_string())]);
    let r = run(&p, &opts).await.unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(r.step("a").unwrap().outputs["x"], "42");
    assert!(r.run_id.is_none() && r.step("a").unwrap().run_id.is_none());
    assert_eq!(
        read(d, "b.txt"),
        "42 env-test b 20 in.csv 7 in.csv window-9 http://h/?a=b\n"
    );
    // Bad run options are errors before anything runs.
    let (mut opts, _) = options();
    opts.params = BTreeMap::from([("nope".to_string(), "1".to_string())]);
    let e = run(&p, &opts).await.unwrap_err().to_string();
    assert!(
        e.contains("unknown param `nope`") && e.contains("data, rows"),
        "{e}"
    );
}

#[tokio::test]
async fn missing_outputs_and_bad_output_lines_fail_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: miss\nsteps:\n  - {name: a, run: 'true', outputs: [model.bin]}\n  - {name: b, run: 'echo oops >> $LOOPML_STEP_OUTPUTS'}\n",
    );
    let (r, _) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let a = r.step("a").unwrap().message.clone().unwrap();
    assert!(a.contains("did not produce `model.bin`"), "{a}");
    let b = r.step("b").unwrap().message.clone().unwrap();
    assert!(b.contains("not key=value"), "{b}");
    assert!(
        !dir.path().join(".loopml/miss.lock").exists(),
        "failed steps are not cached"
    );
}

const PEOPLE: &str = "id,age,city\n1,34,Paris\n2,51,Rome\n3,17,Paris\n";

#[tokio::test]
async fn validate_steps_pass_or_fail_on_a_real_suite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("people.csv"), PEOPLE).unwrap();
    std::fs::write(
        d.join("good.yaml"),
        "name: good\nexpectations:\n  - expect_column_to_exist: {column: age}\n  - expect_column_values_to_be_between: {column: age, min_value: 0, max_value: 120}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("strict.yaml"),
        "name: strict\nexpectations:\n  - expect_column_to_exist: {column: age}\n  - expect_column_values_to_be_between: {column: age, min_value: 18, max_value: 120}\n",
    )
    .unwrap();
    let yaml = |suite: &str| {
        format!(
            "name: val\nparams: {{suite: {suite}}}\nsteps:\n  - name: check\n    validate: {{data: people.csv, suite: \"${{params.suite}}.yaml\"}}\n  - {{name: train, needs: [check], run: touch trained}}\n"
        )
    };
    let (r, lines) = go(&pipeline(d, &yaml("good"))).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(r.step("check").unwrap().outputs["failed"], "0");
    assert!(
        step_lines(&lines, "check")
            .iter()
            .any(|l| l.contains("2/2 expectations passed"))
    );
    assert!(d.join("trained").exists());
    std::fs::remove_file(d.join("trained")).unwrap();

    let (r, lines) = go(&pipeline(d, &yaml("strict"))).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let m = r.step("check").unwrap().message.clone().unwrap();
    assert!(
        m.contains("1 of 2 expectations of suite `strict` failed"),
        "{m}"
    );
    assert!(
        step_lines(&lines, "check")
            .iter()
            .any(|l| l.starts_with('✗'))
    );
    assert_eq!(status(&r, "train"), StepStatus::Skipped);
    assert!(!d.join("trained").exists());

    // A missing data file is a clear failure, not a crash.
    std::fs::remove_file(d.join("people.csv")).unwrap();
    let (r, _) = go(&pipeline(d, &yaml("good"))).await;
    let m = r.step("check").unwrap().message.clone().unwrap();
    assert!(m.contains("people.csv"), "{m}");
}

#[tokio::test]
async fn registry_steps_without_a_server_fail_clearly_and_never_promote() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: reg\nsteps:\n  - {name: train, run: 'true'}\n  - {name: register, needs: [train], register: {model: m, from: train}}\n  - {name: promote, needs: [register], promote: {model: m, version: register}}\n",
    );
    let (r, _) = go(&p).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let m = r.step("register").unwrap().message.clone().unwrap();
    assert!(m.contains("need a loopml server"), "{m}");
    assert_eq!(status(&r, "promote"), StepStatus::Skipped);
}

#[tokio::test]
async fn one_step_runs_alone_with_given_upstream_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "name: one\nsteps:\n  - {name: a, run: 'exit 1'}\n  - {name: b, needs: [a], run: 'echo v=${steps.a.x}-b >> $LOOPML_STEP_OUTPUTS'}\n",
    );
    let (opts, _) = options();
    let up = BTreeMap::from([(
        "a".to_string(),
        BTreeMap::from([("x".to_string(), "7".to_string())]),
    )]);
    let r = run_step(&p, "b", &opts, &up).await.unwrap();
    assert_eq!(r.status, StepStatus::Succeeded, "{r:?}");
    assert_eq!(r.outputs["v"], "7-b");
    let r = run_step(&p, "b", &opts, &BTreeMap::new()).await.unwrap();
    assert_eq!(r.status, StepStatus::Failed);
    assert!(
        r.message
            .unwrap()
            .contains("step `a` published no output `x`")
    );
    assert!(run_step(&p, "zz", &opts, &up).await.is_err());
}

#[tokio::test]
async fn built_in_steps_time_out_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("id,age\n");
    for i in 0..200_000 {
        csv.push_str(&format!("{i},{}\n", i % 90));
    }
    std::fs::write(d.join("big.csv"), csv).unwrap();
    std::fs::write(
        d.join("suite.yaml"),
        "name: s\nexpectations:\n  - expect_column_values_to_be_unique: {column: id}\n  - expect_column_median_to_be_between: {column: age, min_value: 0, max_value: 100}\n",
    )
    .unwrap();
    let p = pipeline(
        d,
        "name: slow\nsteps:\n  - {name: check, validate: {data: big.csv, suite: suite.yaml}, timeout: 0.002}\n",
    );
    let (r, _) = go(&p).await;
    let m = r.step("check").unwrap().message.clone().unwrap_or_default();
    assert_eq!(status(&r, "check"), StepStatus::Failed, "{r:#?}");
    assert!(m.contains("timed out after 0.002s"), "{m}");
}
