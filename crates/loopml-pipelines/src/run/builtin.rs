//! The built-in step kinds: `validate` (a data suite, in-process), `register` (a run's model as
//! a new registry version), `gate` (challenger against champion on a metric) and `promote` (an
//! alias or stage onto a version), each over the tracking server's MLflow REST API.

use super::*;

pub(super) async fn validate(
    ctx: &Ctx,
    data: &str,
    suite: &str,
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    let (d, s) = (ctx.path(data), ctx.path(suite));
    let result = blocking(move || loopml_data::validate::validate_with_suite_file(&d, &s)).await;
    let result = match result {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Attempt::Failed(format!("cannot validate `{data}`: {e}")),
        None => return Attempt::Failed("internal error while validating".into()),
    };
    for line in result.summary().lines() {
        log.line(line);
    }
    let st = &result.statistics;
    if let (Some(t), Some(r)) = (&ctx.tracker, run) {
        let metrics = vec![
            ("validation.success_percent".to_string(), st.success_percent),
            (
                "validation.unsuccessful_expectations".to_string(),
                st.unsuccessful_expectations as f64,
            ),
        ];
        let json = serde_json::to_vec_pretty(&result.to_json()).unwrap_or_default();
        let r = r.clone();
        let step = log.step().to_string();
        let logged = track(t, move |t| {
            t.log_batch(&r.run_id, &[], &[], &metrics)?;
            t.upload(&r.artifact_uri, &format!("validation/{step}.json"), json)?;
            Ok(())
        })
        .await;
        if let Err(e) = logged {
            return Attempt::Failed(e.to_string());
        }
    }
    let outputs = BTreeMap::from([
        (
            "evaluated".to_string(),
            st.evaluated_expectations.to_string(),
        ),
        (
            "failed".to_string(),
            st.unsuccessful_expectations.to_string(),
        ),
    ]);
    if result.success {
        Attempt::Ok(outputs)
    } else {
        Attempt::Failed(format!(
            "validation failed: {} of {} expectations of suite `{}` failed on `{data}`",
            st.unsuccessful_expectations, st.evaluated_expectations, result.suite_name
        ))
    }
}

pub(super) async fn register(
    ctx: &Ctx,
    model: &str,
    from_run: &str,
    artifact: &str,
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    let Some(t) = &ctx.tracker else {
        return Attempt::Failed("`register` steps need a loopml server".into());
    };
    let (m, art, rid) = (
        model.to_string(),
        artifact.to_string(),
        from_run.to_string(),
    );
    let created = track(t, move |t| {
        let source = t.model_source(&rid, &art)?;
        t.ensure_registered_model(&m)?;
        t.create_model_version(&m, &source, &rid)
            .map(|v| (v, source.uri))
    })
    .await;
    let (v, source) = match created {
        Ok(v) => v,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    log.line(&format!(
        "loopml: registered `{model}` version {} from {source}",
        v.version
    ));
    if let Some(r) = run {
        let tags = vec![
            ("loopml.model".to_string(), model.to_string()),
            ("loopml.model_version".to_string(), v.version.clone()),
        ];
        let rid = r.run_id.clone();
        if let Err(e) = track(t, move |t| t.log_batch(&rid, &[], &tags, &[])).await {
            return Attempt::Failed(e.to_string());
        }
    }
    Attempt::Ok(BTreeMap::from([
        ("version".to_string(), v.version),
        ("model".to_string(), model.to_string()),
    ]))
}

/// What a gate step compares: the challenger version against the model's `alias`, on `metric`.
pub(super) struct GateArgs<'a> {
    pub(super) model: &'a str,
    pub(super) alias: &'a str,
    pub(super) challenger: &'a str,
    pub(super) metric: &'a str,
    pub(super) margin: f64,
    pub(super) direction: Direction,
    pub(super) champion_without_metric: ChampionWithoutMetric,
    pub(super) score_on: Option<&'a ScoreOn>,
}

pub(super) async fn gate(
    ctx: &Ctx,
    g: &GateArgs<'_>,
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    let Some(t) = &ctx.tracker else {
        return Attempt::Failed("`gate` steps need a loopml server".into());
    };
    if let Some(on) = g.score_on {
        return gate_on_data(t, g, on, run, log).await;
    }
    let (model, alias, challenger, metric) = (
        g.model.to_string(),
        g.alias.to_string(),
        g.challenger.to_string(),
        g.metric.to_string(),
    );
    // Challenger version, its metric, the champion version and its metric.
    let looked = track(t, move |t| {
        let ch = t.model_version(&model, &challenger)?;
        let ch_value = match &ch.run_id {
            Some(r) => t.latest_metric(r, &metric)?,
            None => None,
        };
        let champ = t.version_by_alias(&model, &alias)?;
        let champ_value = match champ.as_ref().and_then(|c| c.run_id.clone()) {
            Some(r) => t.latest_metric(&r, &metric)?,
            None => None,
        };
        Ok((ch, ch_value, champ, champ_value))
    })
    .await;
    let (ch, ch_value, champ, champ_value) = match looked {
        Ok(x) => x,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let (model, alias, metric) = (g.model, g.alias, g.metric);
    let Some(cv) = ch_value else {
        let from = ch.run_id.as_deref().map_or_else(
            || "it has no source run".to_string(),
            |r| format!("its run {r} did not log it"),
        );
        return Attempt::Failed(format!(
            "the challenger `{model}` version {} has no metric `{metric}` ({from})",
            ch.version
        ));
    };
    let mut outputs = BTreeMap::from([
        ("challenger".to_string(), ch.version.clone()),
        ("challenger_value".to_string(), cv.to_string()),
    ]);
    let mut metrics = vec![("gate.challenger".to_string(), cv)];
    let verdict: std::result::Result<String, String> = match (&champ, champ_value) {
        (None, _) => Ok(format!(
            "no champion: `{model}@{alias}` is not set, so version {} passes as the first \
             model ({metric} = {cv})",
            ch.version
        )),
        (Some(c), _) if c.version == ch.version => Ok(format!(
            "version {} already is `{model}@{alias}`",
            ch.version
        )),
        (Some(c), None) => {
            outputs.insert("champion".into(), c.version.clone());
            let from = c.run_id.as_deref().map_or_else(
                || "it has no source run".to_string(),
                |r| format!("its run {r} did not log it"),
            );
            match g.champion_without_metric {
                ChampionWithoutMetric::Pass => Ok(format!(
                    "the champion (version {}) has no metric `{metric}` ({from}); \
                     `champion_without_metric: pass`, so version {} passes ({metric} = {cv})",
                    c.version, ch.version
                )),
                ChampionWithoutMetric::Reject => Err(format!(
                    "the champion `{model}@{alias}` (version {}) has no metric `{metric}` \
                     ({from}), so version {} ({metric} = {cv}) cannot be compared with it: \
                     REJECT (log `{metric}` for the champion, gate on a shared dataset, or set \
                     `champion_without_metric: pass`)",
                    c.version, ch.version
                )),
            }
        }
        (Some(c), Some(pv)) => {
            outputs.insert("champion".into(), c.version.clone());
            outputs.insert("champion_value".into(), pv.to_string());
            metrics.push(("gate.champion".to_string(), pv));
            let (pass, need) = match g.direction {
                Direction::Max => (cv >= pv + g.margin, format!("≥ {}", pv + g.margin)),
                Direction::Min => (cv <= pv - g.margin, format!("≤ {}", pv - g.margin)),
            };
            let dir = match g.direction {
                Direction::Max => "higher",
                Direction::Min => "lower",
            };
            let line = format!(
                "{metric}: challenger version {} = {cv}, champion version {} = {pv}, margin \
                 {} ({dir} is better; needs {need})",
                ch.version, c.version, g.margin
            );
            if pass {
                Ok(format!("{line}: PASS"))
            } else {
                Err(format!("{line}: REJECT"))
            }
        }
    };
    match &verdict {
        Ok(l) | Err(l) => log.line(&format!("loopml: gate: {l}")),
    }
    if let Some(r) = run {
        let rid = r.run_id.clone();
        let passed = verdict.is_ok();
        let tags = vec![(
            "loopml.gate".to_string(),
            if passed { "pass" } else { "reject" }.to_string(),
        )];
        if let Err(e) = track(t, move |t| t.log_batch(&rid, &[], &tags, &metrics)).await {
            return Attempt::Failed(e.to_string());
        }
    }
    outputs.insert("passed".into(), verdict.is_ok().to_string());
    match verdict {
        Ok(_) => Attempt::Ok(outputs),
        Err(line) => Attempt::Rejected(line, outputs),
    }
}

/// The fair gate: champion and challenger scored by the server on the same dataset version,
/// optionally with a minimum number of labelled rows and a paired-bootstrap bound.
async fn gate_on_data(
    t: &Arc<Tracker>,
    g: &GateArgs<'_>,
    on: &ScoreOn,
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    let (model, alias, challenger) = (
        g.model.to_string(),
        g.alias.to_string(),
        g.challenger.to_string(),
    );
    let looked = track(t, move |t| {
        let ch = t.model_version(&model, &challenger)?;
        let champ = t.version_by_alias(&model, &alias)?;
        Ok((ch, champ))
    })
    .await;
    let (ch, champ) = match looked {
        Ok(x) => x,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let (model, alias, metric) = (g.model, g.alias, g.metric);
    if champ.as_ref().is_some_and(|c| c.version == ch.version) {
        let line = format!("version {} already is `{model}@{alias}`", ch.version);
        log.line(&format!("loopml: gate: {line}"));
        return Attempt::Ok(BTreeMap::from([
            ("challenger".to_string(), ch.version.clone()),
            ("passed".to_string(), "true".to_string()),
        ]));
    }
    let mut versions = Vec::new();
    if let Some(c) = &champ {
        versions.push(c.version.clone());
    }
    versions.push(ch.version.clone());
    let resamples = match (on.confidence, on.resamples) {
        (_, Some(r)) => r,
        (Some(_), None) => 1000,
        (None, None) => 0,
    };
    let mut request = serde_json::json!({
        "model": model,
        "versions": versions,
        "dataset": on.dataset,
        "label": on.label,
        "metric": metric,
        "resamples": resamples,
    });
    for (key, value) in [
        ("prediction", on.prediction.clone()),
        ("score", on.score.clone()),
        ("positive", on.positive.clone()),
    ] {
        if let Some(v) = value {
            request[key] = serde_json::json!(v);
        }
    }
    if let Some(f) = &on.features {
        request["features"] = serde_json::json!(f);
    }
    if let Some(c) = on.confidence {
        request["confidence"] = serde_json::json!(c);
    }
    let answer = match track(t, move |t| t.compare_versions(&request)).await {
        Ok(a) => a,
        Err(e) => {
            return Attempt::Failed(format!("the gate could not score on {}: {e}", on.dataset));
        }
    };
    let labelled = answer["labelled_rows"].as_u64().unwrap_or(0) as usize;
    let scores: Vec<Option<f64>> = answer["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["value"].as_f64())
        .collect();
    let dataset = answer["dataset"]
        .as_str()
        .unwrap_or(&on.dataset)
        .to_string();
    let Some(Some(cv)) = scores.last().copied() else {
        return Attempt::Failed(format!(
            "`{metric}` of version {} on {dataset} could not be computed ({labelled} labelled \
             rows; ROC AUC needs both classes)",
            ch.version
        ));
    };
    let mut outputs = BTreeMap::from([
        ("challenger".to_string(), ch.version.clone()),
        ("challenger_value".to_string(), cv.to_string()),
        ("dataset".to_string(), dataset.clone()),
        ("rows".to_string(), labelled.to_string()),
    ]);
    let mut metrics = vec![
        ("gate.challenger".to_string(), cv),
        ("gate.rows".to_string(), labelled as f64),
    ];
    let min_rows = on.min_rows.unwrap_or(1);
    let verdict: std::result::Result<String, String> = if labelled < min_rows {
        Err(format!(
            "{dataset} has {labelled} labelled rows; the gate needs at least {min_rows}: REJECT"
        ))
    } else {
        match (&champ, scores.first().copied().flatten()) {
            (None, _) => Ok(format!(
                "no champion: `{model}@{alias}` is not set, so version {} passes as the first \
                 model ({metric} = {cv} on {dataset}, {labelled} rows)",
                ch.version
            )),
            (Some(c), None) => Err(format!(
                "`{metric}` of the champion (version {}) on {dataset} could not be computed: REJECT",
                c.version
            )),
            (Some(c), Some(pv)) => {
                outputs.insert("champion".into(), c.version.clone());
                outputs.insert("champion_value".into(), pv.to_string());
                metrics.push(("gate.champion".to_string(), pv));
                let (point, need) = match g.direction {
                    Direction::Max => (cv >= pv + g.margin, format!("≥ {}", pv + g.margin)),
                    Direction::Min => (cv <= pv - g.margin, format!("≤ {}", pv - g.margin)),
                };
                let dir = match g.direction {
                    Direction::Max => "higher",
                    Direction::Min => "lower",
                };
                let mut line = format!(
                    "{metric} on {dataset} ({labelled} rows): challenger version {} = {cv}, \
                     champion version {} = {pv}, margin {} ({dir} is better; needs {need})",
                    ch.version, c.version, g.margin
                );
                let mut bound_ok = true;
                if let Some(conf) = on.confidence {
                    let d = &answer["difference"];
                    let bound = match g.direction {
                        Direction::Max => d["lower"].as_f64(),
                        Direction::Min => d["upper"].as_f64().map(|u| -u),
                    };
                    match bound {
                        Some(b) => {
                            outputs.insert("improvement_bound".into(), b.to_string());
                            metrics.push(("gate.improvement_bound".to_string(), b));
                            bound_ok = b >= g.margin;
                            line.push_str(&format!(
                                "; improvement ≥ {b:.4} with {conf} confidence ({} paired \
                                 resamples; needs ≥ {})",
                                d["resamples"], g.margin
                            ));
                        }
                        None => {
                            bound_ok = false;
                            line.push_str("; no confidence bound could be computed");
                        }
                    }
                }
                if point && bound_ok {
                    Ok(format!("{line}: PASS"))
                } else {
                    Err(format!("{line}: REJECT"))
                }
            }
        }
    };
    match &verdict {
        Ok(l) | Err(l) => log.line(&format!("loopml: gate: {l}")),
    }
    if let Some(r) = run {
        let rid = r.run_id.clone();
        let tags = vec![
            (
                "loopml.gate".to_string(),
                if verdict.is_ok() { "pass" } else { "reject" }.to_string(),
            ),
            ("loopml.gate.dataset".to_string(), dataset.clone()),
        ];
        if let Err(e) = track(t, move |t| t.log_batch(&rid, &[], &tags, &metrics)).await {
            return Attempt::Failed(e.to_string());
        }
    }
    outputs.insert("passed".into(), verdict.is_ok().to_string());
    match verdict {
        Ok(_) => Attempt::Ok(outputs),
        Err(line) => Attempt::Rejected(line, outputs),
    }
}

pub(super) async fn promote(
    ctx: &Ctx,
    model: &str,
    alias: &str,
    version: &str,
    run: Option<&RunInfo>,
    log: &StepLog,
) -> Attempt {
    let Some(t) = &ctx.tracker else {
        return Attempt::Failed("`promote` steps need a loopml server".into());
    };
    let (m, a, v) = (model.to_string(), alias.to_string(), version.to_string());
    let moved = track(t, move |t| {
        let before = t.version_by_alias(&m, &a)?;
        t.set_alias(&m, &a, &v)?;
        Ok(before)
    })
    .await;
    let before = match moved {
        Ok(b) => b,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let was = before
        .as_ref()
        .map_or_else(|| "unset".to_string(), |b| format!("version {}", b.version));
    log.line(&format!(
        "loopml: `{model}@{alias}` now points at version {version} (was {was})"
    ));
    if let Some(r) = run {
        let rid = r.run_id.clone();
        let tags = vec![
            ("loopml.model".to_string(), model.to_string()),
            ("loopml.alias".to_string(), alias.to_string()),
            ("loopml.model_version".to_string(), version.to_string()),
        ];
        if let Err(e) = track(t, move |t| t.log_batch(&rid, &[], &tags, &[])).await {
            return Attempt::Failed(e.to_string());
        }
    }
    let mut outputs = BTreeMap::from([("version".to_string(), version.to_string())]);
    if let Some(b) = before {
        outputs.insert("previous".into(), b.version);
    }
    Attempt::Ok(outputs)
}
