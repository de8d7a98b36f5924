//! Where API-made deployments live beyond one process, so that replicas on one database behave
//! as one deployment:
//! - `deployments`: the spec and the operator-visible state (status, rollback reason, previous
//!   spec, events, when the current rollout began); written on every operator action and
//!   automatic rollback, re-read by the other replicas when one announces a change.
//! - `deployment_counters`: requests, errors, shadow copies and bandit rewards per variant,
//!   which every replica adds to (an upsert that adds, never a read-modify-write), so the status
//!   and the bandit see every replica's traffic and feedback.
//! - `deployment_outcomes`: each replica's latest outcomes (ok, latency) per variant, one row per
//!   share; together they are the window a canary is judged on, so a verdict counts every
//!   replica's requests and a rollback on one replica stops the canary on all of them.
//!
//! Every replica shares what it counted since the last time about once a second
//! ([`ServingApi::share_counters`]); what it counted meanwhile is shown on top of the shared
//! totals, so its own answers never lag.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::deployments::{Counts, Deployment, DeploymentSpec, DeploymentState, Pending, Verdict};
use crate::error::{Error, Result};
use crate::infer_log::now_us;
use crate::routes::ServingApi;

/// The change-bus topic of stored deployments.
pub(crate) const DEPLOYMENT_TOPIC: &str = "deployments";

/// The serving tables' migrations, in order.
pub const MIGRATIONS: &[loopml_store::Migration] = &[
    loopml_store::Migration {
        name: "0001_deployments",
        sqlite: include_str!("../migrations/sqlite/0001_deployments.sql"),
        postgres: include_str!("../migrations/postgres/0001_deployments.sql"),
    },
    loopml_store::Migration {
        name: "0002_deployment_counters",
        sqlite: include_str!("../migrations/sqlite/0002_deployment_counters.sql"),
        postgres: include_str!("../migrations/postgres/0002_deployment_counters.sql"),
    },
];

const ADD_COUNTS: &str = "INSERT INTO deployment_counters (deployment, variant, requests, errors, \
     shadow_requests, shadow_errors, rewards, reward_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (deployment, variant) DO UPDATE SET \
     requests = deployment_counters.requests + excluded.requests, \
     errors = deployment_counters.errors + excluded.errors, \
     shadow_requests = deployment_counters.shadow_requests + excluded.shadow_requests, \
     shadow_errors = deployment_counters.shadow_errors + excluded.shadow_errors, \
     rewards = deployment_counters.rewards + excluded.rewards, \
     reward_sum = deployment_counters.reward_sum + excluded.reward_sum";

/// Counters saved inside the state by earlier versions go in once, whichever replica is first.
const SEED_COUNTS: &str = "INSERT INTO deployment_counters (deployment, variant, requests, errors, \
     shadow_requests, shadow_errors, rewards, reward_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (deployment, variant) DO NOTHING";

fn count_params<'a>(
    deployment: &'a str,
    variant: &'a str,
    c: &Counts,
) -> [loopml_store::Value<'a>; 8] {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX).into();
    [
        deployment.into(),
        variant.into(),
        n(c.requests),
        n(c.errors),
        n(c.shadow_requests),
        n(c.shadow_errors),
        n(c.rewards),
        c.reward_sum.into(),
    ]
}

/// Outcomes as text: the latency in µs, negative (−latency − 1) for a failure.
fn encode_outcomes(o: &VecDeque<(bool, u32)>) -> String {
    let mut s = String::with_capacity(o.len() * 6);
    for (i, (ok, us)) in o.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = if *ok {
            i64::from(*us)
        } else {
            -i64::from(*us) - 1
        };
        s.push_str(&v.to_string());
    }
    s
}

fn decode_outcomes(s: &str) -> impl Iterator<Item = (bool, u32)> + '_ {
    s.split(',').filter_map(|x| x.parse::<i64>().ok()).map(|v| {
        if v >= 0 {
            (true, u32::try_from(v).unwrap_or(u32::MAX))
        } else {
            (false, u32::try_from(-v - 1).unwrap_or(u32::MAX))
        }
    })
}

/// What one share reads back for one deployment.
struct Shared {
    totals: BTreeMap<String, Counts>,
    windows: BTreeMap<String, VecDeque<(bool, u32)>>,
}

impl ServingApi {
    /// Shares the counters, then saves every API-made deployment (graceful shutdown).
    pub async fn persist_all(&self) {
        if let Err(e) = self.share_counters().await {
            tracing::warn!(error = %e, "could not share the deployment counters");
        }
        for d in self.deployment_list() {
            self.persist(&d).await;
        }
    }

    /// Saves a deployment created over the API (file-defined ones are not stored): its spec and
    /// operator-visible state; its counters are shared apart.
    pub async fn persist(&self, d: &Deployment) {
        let Some((db, spec_json, state_json)) = self.saved_form(d) else {
            return;
        };
        let name = d.spec().name.clone();
        let now = now_us() / 1000;
        let res = db
            .write(move |c| {
                c.execute(
                    "INSERT INTO deployments (name, spec, state, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (name) DO UPDATE SET \
                     spec = excluded.spec, state = excluded.state, updated_at = excluded.updated_at",
                    &[name.as_str().into(), spec_json.into(), state_json.into(), now.into()],
                )
                .map_err(Error::from)
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not save the deployment");
        }
    }

    /// What is saved of an API-made deployment (file-defined ones are not stored): the
    /// database, the spec JSON and the operator-visible state JSON.
    fn saved_form(&self, d: &Deployment) -> Option<(loopml_store::Database, String, String)> {
        if d.from_file {
            return None;
        }
        let db = self.db.clone()?;
        let spec = serde_json::to_string(d.spec().as_ref()).ok()?;
        let state = serde_json::to_string(&d.control_state()).ok()?;
        Some((db, spec, state))
    }

    /// Saves an operator action and tells the other replicas.
    pub(crate) async fn persist_and_announce(&self, d: &Deployment) {
        self.persist(d).await;
        self.announce_deployments();
    }

    /// Saves an automatic rollback, unless another replica changed the stored spec since
    /// `before` (it rolled back first, or an operator acted): then this replica takes the
    /// stored one instead. Tells the other replicas either way.
    pub(crate) async fn save_rollback(&self, d: &Deployment, before: Arc<DeploymentSpec>) {
        self.metrics.rollback(&before.name);
        let Some((db, spec_json, state_json)) = self.saved_form(d) else {
            return;
        };
        let now = now_us() / 1000;
        let res = db
            .write(move |c| {
                // Row lock on PostgreSQL, so two replicas judging at once cannot both win;
                // SQLite runs one writer at a time anyway.
                let lock = if c.backend() == "postgres" {
                    " FOR UPDATE"
                } else {
                    ""
                };
                let stored = c.query_opt(
                    &format!("SELECT spec FROM deployments WHERE name = ?1{lock}"),
                    &[before.name.as_str().into()],
                    |r| r.string(0),
                )?;
                let unchanged = stored
                    .and_then(|s| serde_json::from_str::<DeploymentSpec>(&s).ok())
                    .is_some_and(|s| s == *before);
                if !unchanged {
                    return Ok::<bool, Error>(false);
                }
                c.execute(
                    "UPDATE deployments SET spec = ?2, state = ?3, updated_at = ?4 WHERE name = ?1",
                    &[
                        before.name.as_str().into(),
                        spec_json.into(),
                        state_json.into(),
                        now.into(),
                    ],
                )?;
                Ok(true)
            })
            .await;
        match res {
            Ok(true) => {}
            Ok(false) => {
                // Someone else's change wins; take it.
                if let Err(e) = self.sync_deployments().await {
                    tracing::warn!(error = %e, "cannot re-read the stored deployments");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not save the rollback"),
        }
        self.announce_deployments();
    }

    /// Tells the other replicas that the stored deployments changed.
    pub(crate) fn announce_deployments(&self) {
        if let Some(bus) = self.bus.get() {
            bus.announce(DEPLOYMENT_TOPIC, now_us() / 1000);
        }
    }

    /// Adds what this replica counted since the last share to the shared counters and
    /// outcomes, reads back every replica's, and judges each canary on the shared window (a
    /// breach rolls it back here and, through the saved spec, on every replica). Counts that
    /// cannot be written stay for the next share: nothing is lost while the database is down.
    pub async fn share_counters(&self) -> Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let deployments: Vec<Arc<Deployment>> = self
            .deployment_list()
            .into_iter()
            .filter(|d| !d.from_file)
            .collect();
        if deployments.is_empty() {
            return Ok(());
        }
        let taken: Vec<(String, Pending, usize)> = deployments
            .iter()
            .map(|d| (d.spec().name.clone(), d.take_pending(), d.window_len()))
            .collect();
        if taken.iter().any(|(_, p, _)| !p.is_empty()) {
            let rows: Vec<(String, Pending, usize)> = taken.clone();
            let replica = self.replica.clone();
            let at = now_us();
            let written = db
                .write(move |c| {
                    for (name, p, window) in &rows {
                        for (variant, counts) in p.counts.iter().filter(|(_, c)| !c.is_empty()) {
                            c.execute(ADD_COUNTS, &count_params(name, variant, counts))?;
                        }
                        for (variant, o) in p.outcomes.iter().filter(|(_, o)| !o.is_empty()) {
                            c.execute(
                                "INSERT INTO deployment_outcomes (deployment, variant, at_us, \
                                 replica, outcomes) VALUES (?1, ?2, ?3, ?4, ?5)",
                                &[
                                    name.as_str().into(),
                                    variant.as_str().into(),
                                    at.into(),
                                    replica.as_str().into(),
                                    encode_outcomes(o).into(),
                                ],
                            )?;
                            // Each row holds at least one outcome: the newest `window` rows
                            // always cover a window; older ones go.
                            let limit = i64::try_from(*window).unwrap_or(i64::MAX);
                            let oldest_kept = c.query_opt(
                                "SELECT at_us FROM deployment_outcomes WHERE deployment = ?1 \
                                 AND variant = ?2 ORDER BY at_us DESC LIMIT 1 OFFSET ?3",
                                &[name.as_str().into(), variant.as_str().into(), limit.into()],
                                |r| r.i64(0),
                            )?;
                            if let Some(t) = oldest_kept {
                                c.execute(
                                    "DELETE FROM deployment_outcomes WHERE deployment = ?1 AND \
                                     variant = ?2 AND at_us < ?3",
                                    &[name.as_str().into(), variant.as_str().into(), t.into()],
                                )?;
                            }
                        }
                    }
                    Ok::<(), Error>(())
                })
                .await;
            if let Err(e) = written {
                for (d, (_, p, _)) in deployments.iter().zip(taken) {
                    d.restore_pending(p);
                }
                return Err(e);
            }
        }
        let wanted: Vec<(String, Vec<String>, i64, usize)> = deployments
            .iter()
            .map(|d| {
                let spec = d.spec();
                (
                    spec.name.clone(),
                    spec.variants.iter().map(|v| v.name.clone()).collect(),
                    d.window_since_us(),
                    d.window_len(),
                )
            })
            .collect();
        let mut shared = db
            .read(move |c| {
                let mut out: BTreeMap<String, Shared> = BTreeMap::new();
                let names: HashSet<&str> = wanted.iter().map(|(n, ..)| n.as_str()).collect();
                let totals = c.query(
                    "SELECT deployment, variant, requests, errors, shadow_requests, \
                     shadow_errors, rewards, reward_sum FROM deployment_counters",
                    &[],
                    |r| {
                        let n = |i| r.i64(i).map(|v| u64::try_from(v).unwrap_or(0));
                        Ok((
                            r.string(0)?,
                            r.string(1)?,
                            Counts {
                                requests: n(2)?,
                                errors: n(3)?,
                                shadow_requests: n(4)?,
                                shadow_errors: n(5)?,
                                rewards: n(6)?,
                                reward_sum: r.f64(7)?,
                            },
                        ))
                    },
                )?;
                for (d, v, counts) in totals {
                    if names.contains(d.as_str()) {
                        out.entry(d)
                            .or_insert_with(|| Shared {
                                totals: BTreeMap::new(),
                                windows: BTreeMap::new(),
                            })
                            .totals
                            .insert(v, counts);
                    }
                }
                for (name, variants, since, window) in &wanted {
                    let entry = out.entry(name.clone()).or_insert_with(|| Shared {
                        totals: BTreeMap::new(),
                        windows: BTreeMap::new(),
                    });
                    for v in variants {
                        let rows = c.query(
                            "SELECT outcomes FROM deployment_outcomes WHERE deployment = ?1 AND \
                             variant = ?2 AND at_us >= ?3 ORDER BY at_us DESC LIMIT ?4",
                            &[
                                name.as_str().into(),
                                v.as_str().into(),
                                (*since).into(),
                                i64::try_from(*window).unwrap_or(i64::MAX).into(),
                            ],
                            |r| r.string(0),
                        )?;
                        // Newest row first: put them back oldest first, keep the latest window.
                        let mut w: VecDeque<(bool, u32)> = VecDeque::new();
                        for row in rows.iter().rev() {
                            w.extend(decode_outcomes(row));
                        }
                        while w.len() > *window {
                            w.pop_front();
                        }
                        entry.windows.insert(v.clone(), w);
                    }
                }
                Ok::<_, Error>(out)
            })
            .await?;
        for d in deployments {
            let before = d.spec();
            let Some(s) = shared.remove(&before.name) else {
                continue;
            };
            if let Verdict::RolledBack(reason) = d.apply_shared(&s.totals, s.windows) {
                tracing::warn!(deployment = %before.name, %reason, "canary rolled back on the replicas' shared window");
                self.save_rollback(&d, before).await;
            }
        }
        Ok(())
    }

    /// Brings this replica's API-made deployments in line with the database, where another
    /// replica may have created, changed, rolled back or deleted one: new and changed specs
    /// are applied (their models loaded before the swap, as for any apply) with the state saved
    /// beside them, vanished ones are unloaded. File-defined deployments are this process's own
    /// and left alone. Returns what changed.
    pub async fn sync_deployments(&self) -> Result<Vec<String>> {
        if self.db.is_none() {
            return Ok(Vec::new());
        }
        let rows = self.stored_deployments().await?;
        let mut changed = Vec::new();
        let stored: HashSet<String> = rows.iter().map(|(n, _, _)| n.clone()).collect();
        for (name, spec, state) in rows {
            let local = self.deployment(&name);
            if local.as_ref().is_some_and(|d| d.from_file) {
                continue;
            }
            let Ok(spec) = serde_json::from_str::<DeploymentSpec>(&spec) else {
                continue;
            };
            let saved = serde_json::from_str::<DeploymentState>(&state).ok();
            let same_spec = local.as_ref().is_some_and(|d| *d.spec() == spec);
            if same_spec {
                // The spec is the same; an operator-visible change (a note, a status) may not be.
                if let (Some(d), Some(saved)) = (&local, saved)
                    && d.status() != (saved.status.clone(), saved.rollback_reason.clone())
                {
                    d.restore_control(saved);
                    changed.push(format!("{name}: state"));
                }
                continue;
            }
            let fresh = local.is_none();
            match self.apply_spec(spec, false, None).await {
                Ok(d) => {
                    if let Some(saved) = saved {
                        d.restore_control(saved);
                    }
                    changed.push(format!(
                        "{name}: {}",
                        if fresh { "created" } else { "applied" }
                    ));
                }
                Err(e) => changed.push(format!("{name}: could not apply: {e}")),
            }
        }
        let gone: Vec<Arc<Deployment>> = self
            .deployment_list()
            .into_iter()
            .filter(|d| !d.from_file && !stored.contains(&d.spec().name))
            .collect();
        for d in gone {
            let spec = d.spec();
            if let Ok(mut all) = self.deployments.write() {
                all.remove(&spec.name);
            }
            for v in &spec.variants {
                self.unload_model(&spec.model_name(&v.name));
            }
            changed.push(format!("{}: deleted", spec.name));
        }
        Ok(changed)
    }

    /// The saved deployments as (name, spec JSON, state JSON), by name.
    async fn stored_deployments(&self) -> Result<Vec<(String, String, String)>> {
        let Some(db) = &self.db else {
            return Ok(Vec::new());
        };
        db.read(|c| {
            c.query(
                "SELECT name, spec, state FROM deployments ORDER BY name",
                &[],
                |r| Ok((r.string(0)?, r.string(1)?, r.string(2)?)),
            )
            .map_err(Error::from)
        })
        .await
    }

    /// Re-creates the stored deployments (at start-up), without saving them again (another
    /// replica may be serving them). One that cannot load is reported and skipped, so one bad
    /// model cannot keep the server down.
    pub async fn restore_deployments(&self) -> Vec<String> {
        let Some(db) = &self.db else {
            return Vec::new();
        };
        let rows = self.stored_deployments().await;
        let mut problems = Vec::new();
        let mut legacy: Vec<(String, String, Counts)> = Vec::new();
        for (name, spec, state) in rows.unwrap_or_default() {
            let parsed: Option<(DeploymentSpec, DeploymentState)> = serde_json::from_str(&spec)
                .ok()
                .zip(serde_json::from_str(&state).ok());
            let Some((spec, state)) = parsed else {
                problems.push(format!("deployment '{name}': stored spec unreadable"));
                continue;
            };
            for (v, s) in &state.variants {
                if !s.counts().is_empty() {
                    legacy.push((name.clone(), v.clone(), s.counts()));
                }
            }
            match self.apply_spec(spec, false, None).await {
                Ok(d) => d.restore_control(state),
                Err(e) => problems.push(format!("deployment '{name}': {e}")),
            }
        }
        if !legacy.is_empty() {
            let seeded = db
                .write(move |c| {
                    for (d, v, counts) in &legacy {
                        c.execute(SEED_COUNTS, &count_params(d, v, counts))?;
                    }
                    Ok::<(), Error>(())
                })
                .await;
            if let Err(e) = seeded {
                problems.push(format!("saved deployment counters: {e}"));
            }
        }
        if let Err(e) = self.share_counters().await {
            problems.push(format!("deployment counters: {e}"));
        }
        problems
    }

    /// Deletes what is stored of a deployment: spec, counters, outcomes.
    pub(crate) async fn forget_deployment(&self, name: &str) -> Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let n = name.to_string();
        db.write(move |c| {
            for table in ["deployments", "deployment_counters", "deployment_outcomes"] {
                let column = if table == "deployments" {
                    "name"
                } else {
                    "deployment"
                };
                c.execute(
                    &format!("DELETE FROM {table} WHERE {column} = ?1"),
                    &[n.as_str().into()],
                )?;
            }
            Ok::<(), Error>(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopml_store::testing::TestDatabase;

    /// Every `models:/NAME/VERSION` is the fixture linear regressor at that version.
    struct Fixtures;

    impl crate::repository::ModelResolver for Fixtures {
        fn resolve<'a>(
            &'a self,
            uri: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<crate::repository::ResolvedModel>> {
            Box::pin(async move {
                Ok(crate::repository::ResolvedModel {
                    version: uri.rsplit('/').next().unwrap_or("1").to_string(),
                    path: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/fixtures/sk_linear_regressor.onnx"),
                })
            })
        }
    }

    /// Whether ONNX Runtime is available (the replicas load real models); a skip is printed
    /// when it is not (and not required, as in CI).
    fn ort() -> bool {
        match crate::runtime::environment(None) {
            Ok(_) => true,
            Err(e) if std::env::var_os("LOOPML_REQUIRE_ORT").is_some() => panic!("{e}"),
            Err(e) => {
                eprintln!("SKIPPED (no ONNX Runtime): {e}");
                false
            }
        }
    }

    /// A replica: a serving API of its own on the shared database.
    fn replica(db: loopml_store::Database) -> ServingApi {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let repository = crate::repository::Repository::with_metrics(Arc::clone(&metrics));
        ServingApi::new(
            repository,
            Some(Arc::new(Fixtures)),
            1,
            metrics,
            Some(db),
            None,
        )
        .expect("serving api")
    }

    /// Applies a deployment on a replica as the API does (models loaded, saved, announced).
    async fn put(api: &ServingApi, spec: &DeploymentSpec) -> Arc<Deployment> {
        api.apply(spec.clone(), false, None).await.expect("apply")
    }

    fn status(api: &ServingApi, variant: &str) -> serde_json::Value {
        let s = api.deployment_status("churn").expect("status");
        s["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .find(|v| v["name"] == variant)
            .cloned()
            .expect("variant")
    }

    const CANARY: &str = "name: churn\nvariants:\n  - {name: stable, model: \"models:/churn/1\"}\n  \
         - {name: candidate, model: \"models:/churn/2\"}\npolicy:\n  strategy: canary\n  \
         percent: 50\n  rollback: {max_error_rate: 0.2, min_requests: 20, window: 40}\n";

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Two replicas on one database: counters and rewards add up across them, and a canary
    /// failing a little on each (below min_requests on either alone) is rolled back on the
    /// shared window, on both.
    #[test]
    fn replicas_share_counters_rewards_and_the_rollback_verdict() {
        if !ort() {
            return;
        }
        for tdb in TestDatabase::all() {
            runtime().block_on(async {
                let spec = DeploymentSpec::parse(CANARY).expect("spec");
                let (a, b) = (replica(tdb.database()), replica(tdb.open_another()));
                let da = put(&a, &spec).await;
                assert!(b.sync_deployments().await.expect("sync").len() == 1);
                let db_ = b.deployment("churn").expect("synced");
                for _ in 0..30 {
                    da.outcome("stable", false, true, 900);
                }
                for _ in 0..10 {
                    db_.outcome("stable", false, true, 1100);
                }
                // 12 failures of 14 on each replica: over the error rate, under min_requests.
                for (d, name) in [(&da, "a"), (&db_, "b")] {
                    for i in 0..14 {
                        assert_eq!(
                            d.outcome("candidate", false, i < 2, 2000),
                            Verdict::None,
                            "replica {name} alone has too few requests to judge"
                        );
                    }
                }
                da.reward("stable", 1.0);
                db_.reward("stable", 0.0);
                db_.reward("stable", 1.0);
                a.share_counters().await.expect("share a");
                b.share_counters().await.expect("share b");
                // b saw both replicas' 28 candidate requests, 24 failed: rolled back, and saved.
                let sb = b.deployment_status("churn").expect("status");
                assert_eq!(sb["status"], "rolled_back", "{sb}");
                assert_eq!(sb["spec"]["policy"]["percent"], 0.0);
                assert_eq!(status(&b, "stable")["requests"], 40);
                assert_eq!(status(&b, "candidate")["requests"], 28);
                assert_eq!(status(&b, "candidate")["errors"], 24);
                assert_eq!(status(&b, "stable")["rewards"], 3);
                assert_eq!(status(&b, "stable")["reward_sum"], 2.0);
                // a takes the saved rollback and everybody's counters.
                let changes = a.sync_deployments().await.expect("sync");
                assert_eq!(changes, vec!["churn: applied".to_string()]);
                let sa = a.deployment_status("churn").expect("status");
                assert_eq!(sa["status"], "rolled_back", "{sa}");
                assert!(
                    sa["rollback_reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("error rate")),
                    "{sa}"
                );
                a.share_counters().await.expect("share a again");
                assert_eq!(status(&a, "stable")["requests"], 40);
                assert_eq!(status(&a, "candidate")["errors"], 24);
                // What a replica counts after its share shows at once, on top of the totals.
                let d = a.deployment("churn").expect("deployment");
                d.outcome("stable", false, true, 800);
                assert_eq!(status(&a, "stable")["requests"], 41);
                // A third replica starting now restores the state and the counters.
                let c = replica(tdb.open_another());
                assert!(c.restore_deployments().await.is_empty());
                let sc = c.deployment_status("churn").expect("status");
                assert_eq!(sc["status"], "rolled_back");
                assert_eq!(status(&c, "stable")["requests"], 40);
                // Deleting forgets the counters too.
                a.delete_deployment("churn").await.expect("delete");
                b.sync_deployments().await.expect("sync");
                assert!(b.deployment("churn").is_none());
                put(&b, &spec).await;
                b.share_counters().await.expect("share");
                assert_eq!(status(&b, "stable")["requests"], 0);
            });
        }
    }

    /// Counts that cannot be written stay for the next share; counters an earlier version kept
    /// inside the saved state are seeded once however many replicas restore them.
    #[test]
    fn failed_shares_keep_counts_and_old_counters_are_seeded_once() {
        if !ort() {
            return;
        }
        let tdb = TestDatabase::sqlite();
        runtime().block_on(async {
            let spec = DeploymentSpec::parse(CANARY).expect("spec");
            let a = replica(tdb.database());
            let d = Deployment::new(spec.clone(), None, false);
            for _ in 0..5 {
                d.outcome("stable", false, true, 100);
            }
            let taken = d.take_pending();
            assert_eq!(taken.counts["stable"].requests, 5);
            d.outcome("stable", false, false, 100);
            d.restore_pending(taken);
            assert_eq!(d.take_pending().counts["stable"].requests, 6);
            // An old row: counters inside the state.
            let old_state = serde_json::json!({
                "status": "active",
                "variants": {"stable": {"requests": 7, "errors": 1, "rewards": 2, "reward_sum": 1.5}},
            });
            let spec_json = serde_json::to_string(&spec).expect("json");
            put(&a, &spec).await;
            tdb.database()
                .write(move |c| {
                    c.execute(
                        "UPDATE deployments SET spec = ?1, state = ?2 WHERE name = 'churn'",
                        &[spec_json.into(), old_state.to_string().into()],
                    )
                    .map_err(Error::from)
                })
                .await
                .expect("old row");
            for _ in 0..2 {
                let r = replica(tdb.open_another());
                assert!(r.restore_deployments().await.is_empty());
                let s = status(&r, "stable");
                assert_eq!((s["requests"].as_u64(), s["errors"].as_u64()), (Some(7), Some(1)));
                assert_eq!(s["reward_sum"], 1.5);
            }
        });
    }

    #[test]
    fn outcomes_round_trip_through_text() {
        let o: VecDeque<(bool, u32)> = [(true, 0), (false, 0), (true, 1234), (false, u32::MAX)]
            .into_iter()
            .collect();
        let text = encode_outcomes(&o);
        assert_eq!(text, "0,-1,1234,-4294967296");
        assert_eq!(decode_outcomes(&text).collect::<VecDeque<_>>(), o);
        assert_eq!(decode_outcomes("").count(), 0);
        assert_eq!(decode_outcomes("x,5").collect::<Vec<_>>(), vec![(true, 5)]);
    }
}
