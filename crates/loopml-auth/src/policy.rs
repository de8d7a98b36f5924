//! What each route needs: MLflow's `BEFORE_REQUEST_HANDLERS` table for the tracking, registry,
//! artifact and trace routes, and loopml's own declarations for the rest. A route no rule names
//! is for admins only (fail closed, as MLflow's `MLFLOW_BASIC_AUTH_FAIL_CLOSED`).

use axum::http::Method;

use crate::permission::Action;

/// Where a request names its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// `experiment_id` (query or JSON body).
    Experiment,
    /// `experiment_name` (get-by-name).
    ExperimentName,
    /// `run_id` or `run_uuid`: the run's experiment.
    Run,
    /// A trace id (`trace_id`, `request_id` or the path): the trace's experiment.
    Trace,
    /// A logged model id (in the path or `model_id`): its experiment.
    LoggedModel,
    /// `name` of a registered model (or prompt).
    Model,
    /// The first segment of an `mlflow-artifacts` path, an experiment id.
    ArtifactPath,
    /// `x-mlflow-experiment-id` header (OTLP ingest).
    ExperimentHeader,
    /// A registered model named by `name` or by a `models:/` `uri` (lineage, model cards).
    ModelUri,
    /// A registered model named by `model` (model comparison).
    ModelField,
    /// Every experiment in `experiment_ids` (at least one).
    ExperimentIds,
    /// An evaluation dataset (`/datasets/{dataset_id}`): every experiment it is linked to, as
    /// MLflow's `validate_can_*_dataset` (a dataset linked to none is for admins).
    EvalDataset,
    /// An evaluation dataset and the experiments a link or unlink names.
    EvalDatasetLink,
    /// A deployment: every registered model its variants serve (the one in the path, and
    /// those a create or replace body names).
    Deployment,
    /// A monitor: the registered models of the deployment it watches (the one in the path,
    /// or the `deployment` a create body names).
    Monitor,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nobody needs to log in (health, readiness).
    Public,
    /// MLflow's server-info, open to all; under auth it reports proxied multipart transfers
    /// off (their part URLs point back here and the client sends them without credentials).
    ServerInfo,
    /// Any authenticated user.
    AnyUser,
    /// Admins only.
    Admin,
    /// `action` on the resource the request names.
    On(Subject, Action),
    /// Creating an experiment (any user; the creator gets MANAGE).
    CreateExperiment,
    /// Creating a registered model or prompt (any user; the creator gets MANAGE).
    CreateModel,
    /// Deleting a registered model (MANAGE on it; its grants are dropped).
    DeleteModel,
    /// A search whose answer is filtered to readable experiments.
    SearchExperiments,
    /// A run search: unreadable experiment ids are removed from the request.
    SearchRuns,
    /// A trace search: unreadable locations are removed from the request.
    SearchTraces,
    /// A registered-model or model-version search: unreadable models are removed from the answer.
    SearchModels,
    /// The deployment list: deployments serving an unreadable model are removed.
    ListDeployments,
    /// The monitor list: monitors of unreadable deployments are removed.
    ListMonitors,
    /// MLflow's auth API and loopml's token and audit API: the handler checks.
    AuthApi,
    /// The gateway's own routes: its master key and virtual keys decide.
    Gateway,
    /// An inference endpoint (`/v2/models/{name}/…`, `/invocations[?model=]`): a deployment
    /// needs the action on every registered model its variants serve; a model an operator
    /// loaded from a file (`--model`, the admins' repository API) is open to any user.
    Inference(Action),
}

/// The MLflow part of a path (`experiments/get` of `/ajax-api/2.0/mlflow/experiments/get`).
fn mlflow_rest(path: &str) -> Option<(&str, &str)> {
    let p = path
        .strip_prefix("/api/")
        .or_else(|| path.strip_prefix("/ajax-api/"))?;
    let (version, rest) = p.split_once('/')?;
    if !matches!(version, "2.0" | "3.0") {
        return None;
    }
    Some((version, rest))
}

/// The rule for a request: its declaration, else admins only (fail closed).
pub fn rule(method: &Method, path: &str) -> Rule {
    declared(method, path).unwrap_or(Rule::Admin)
}

/// The rule declared for a request; `None` for a route nobody declared (the route-inventory
/// test in the binary fails for any such route the app serves).
pub fn declared(method: &Method, path: &str) -> Option<Rule> {
    use Action::*;
    use Subject::*;
    let r = match path {
        // Probes.
        "/health" | "/ready" | "/ping" | "/favicon.ico" | "/v2/health/live"
        | "/v2/health/ready" => Rule::Public,
        "/version" | "/api/2.0/loopml/version" | "/metrics" => Rule::AnyUser,
        // The API's description names no data: readable before logging in, as a client
        // generator needs it.
        "/openapi.json" => Rule::Public,
        "/v1/traces" => Rule::On(ExperimentHeader, Update),
        // The UI serves these two at the root, as `mlflow server` does.
        "/get-artifact" => Rule::On(Run, Read),
        "/model-versions/get-artifact" => Rule::On(Model, Read),
        // MLflow's GraphQL (the UI's metric histories): its resolvers are not checked one by
        // one, so it is for admins.
        "/graphql" => Rule::Admin,
        _ => return declared_prefixed(method, path),
    };
    Some(r)
}

fn declared_prefixed(method: &Method, path: &str) -> Option<Rule> {
    use Action::*;
    use Subject::*;
    if path.starts_with("/static") {
        return Some(Rule::Public);
    }
    // Inference (USE) and model metadata (READ) follow the registered models a deployment
    // serves (Open Inference Protocol, MLflow /invocations); the server's own metadata is
    // any user's; loading and unloading models (the repository API) stays with admins.
    if path == "/v2" {
        return Some(Rule::AnyUser);
    }
    if path == "/invocations" {
        return Some(Rule::Inference(Use));
    }
    if path.starts_with("/v2/models/") {
        let infer = path.ends_with("/infer") || path.ends_with("/generate");
        return Some(Rule::Inference(if infer { Use } else { Read }));
    }
    if path.starts_with("/v2/repository/") {
        return Some(Rule::Admin);
    }
    if is_gateway(path) {
        return Some(Rule::Gateway);
    }
    if let Some(r) = path.strip_prefix("/api/2.0/loopml/") {
        return loopml_rule(method, r);
    }
    let (version, rest) = mlflow_rest(path)?;
    if let Some(r) = rest.strip_prefix("mlflow-artifacts/") {
        return Some(
            match (r.split_once('/').map(|x| x.0).unwrap_or(r), method) {
                ("artifacts", &Method::GET) => Rule::On(ArtifactPath, Read),
                ("artifacts", &Method::PUT) => Rule::On(ArtifactPath, Update),
                // Deleting an artifact needs MANAGE (CVE-2024-4263: EDIT could delete).
                ("artifacts", &Method::DELETE) => Rule::On(ArtifactPath, Delete),
                ("mpu", _) => Rule::On(ArtifactPath, Update),
                ("presigned", _) => Rule::On(ArtifactPath, Read),
                _ => return None,
            },
        );
    }
    let r = rest.strip_prefix("mlflow/")?;
    if r == "server-info" {
        return Some(Rule::ServerInfo);
    }
    if r.starts_with("users/")
        || r.starts_with("roles/")
        || r.starts_with("experiments/permissions/")
        || r.starts_with("registered-models/permissions/")
        || r.starts_with("tokens/")
        || r == "tokens"
        || r == "audit"
    {
        return Some(Rule::AuthApi);
    }
    if r.starts_with("traces") {
        return trace_rule(method, version, r);
    }
    if let Some(lm) = r.strip_prefix("logged-models") {
        return Some(match (lm, method) {
            ("", &Method::POST) => Rule::On(Experiment, Update),
            ("/search", _) => Rule::SearchRuns,
            (_, &Method::GET) => Rule::On(LoggedModel, Read),
            // Deleting the model itself needs delete; a tag, like a run's tag, update.
            (_, &Method::DELETE) if !lm.contains("/tags/") => Rule::On(LoggedModel, Delete),
            _ => Rule::On(LoggedModel, Update),
        });
    }
    if let Some(d) = r.strip_prefix("datasets") {
        return Some(eval_dataset_rule(method, d));
    }
    if let Some(sc) = r.strip_prefix("scorers/") {
        // MLflow: register needs update on the experiment, reading read, delete delete.
        return Some(match sc {
            "register" | "online-config" => Rule::On(Experiment, Update),
            "list" | "get" | "versions" | "online-configs" => Rule::On(Experiment, Read),
            "delete" => Rule::On(Experiment, Delete),
            _ => return None,
        });
    }
    if r == "webhooks" || r.starts_with("webhooks/") {
        // MLflow's webhooks are server-wide: admins.
        return Some(Rule::Admin);
    }
    let rule = match r {
        "experiments/create" => Rule::CreateExperiment,
        "experiments/get" => Rule::On(Experiment, Read),
        "experiments/get-by-name" => Rule::On(ExperimentName, Read),
        "experiments/search" | "experiments/list" => Rule::SearchExperiments,
        "experiments/update"
        | "experiments/set-experiment-tag"
        | "experiments/delete-experiment-tag" => Rule::On(Experiment, Update),
        "experiments/delete" | "experiments/restore" => Rule::On(Experiment, Delete),
        "experiments/search-datasets" => Rule::SearchRuns,
        "runs/create" | "runs/create-promptlab-run" => Rule::On(Experiment, Update),
        "runs/get" | "metrics/get-history" | "artifacts/list" | "get-artifact" => {
            Rule::On(Run, Read)
        }
        "metrics/get-history-bulk" | "metrics/get-history-bulk-interval" => Rule::On(Run, Read),
        "runs/update" | "runs/log-metric" | "runs/log-parameter" | "runs/set-tag"
        | "runs/delete-tag" | "runs/log-batch" | "runs/log-inputs" | "runs/outputs"
        | "runs/log-model" | "upload-artifact" => Rule::On(Run, Update),
        "runs/delete" | "runs/restore" => Rule::On(Run, Delete),
        "runs/search" => Rule::SearchRuns,
        // The UI's prompt lab calls the gateway through this route: a user's own call.
        "gateway-proxy" => Rule::AnyUser,
        "registered-models/create" => Rule::CreateModel,
        "registered-models/get"
        | "registered-models/get-latest-versions"
        | "model-versions/get"
        | "model-versions/get-download-uri"
        | "model-versions/get-artifact" => Rule::On(Model, Read),
        "registered-models/update"
        | "registered-models/rename"
        | "registered-models/set-tag"
        | "registered-models/delete-tag"
        | "model-versions/create"
        | "model-versions/update"
        | "model-versions/transition-stage"
        | "model-versions/set-tag" => Rule::On(Model, Update),
        "registered-models/delete" => Rule::DeleteModel,
        "model-versions/delete" | "model-versions/delete-tag" => Rule::On(Model, Delete),
        "registered-models/search" | "model-versions/search" => Rule::SearchModels,
        // MLflow: reading by alias needs read, setting one update, deleting one delete.
        "registered-models/alias" => match *method {
            Method::GET => Rule::On(Model, Read),
            Method::DELETE => Rule::On(Model, Delete),
            _ => Rule::On(Model, Update),
        },
        _ => return None,
    };
    Some(rule)
}

/// MLflow 3's evaluation datasets (`/api/3.0/mlflow/datasets…`): permissions follow the
/// experiments a dataset is linked to, as MLflow's `validate_can_*_dataset`.
fn eval_dataset_rule(method: &Method, d: &str) -> Rule {
    use Action::*;
    use Subject::*;
    match (d, method) {
        // Creating one needs update on every experiment it is linked to; searching names the
        // experiments to search (each readable).
        ("/create", _) => Rule::On(ExperimentIds, Update),
        ("/search", _) => Rule::On(ExperimentIds, Read),
        (_, _) if d.ends_with("/add-experiments") || d.ends_with("/remove-experiments") => {
            Rule::On(EvalDatasetLink, Update)
        }
        (_, &Method::GET) => Rule::On(EvalDataset, Read),
        // Deleting the dataset needs delete; its records and tags are updates.
        (_, &Method::DELETE) if d.matches('/').count() == 1 => Rule::On(EvalDataset, Delete),
        _ => Rule::On(EvalDataset, Update),
    }
}

/// loopml's own routes under `/api/2.0/loopml/`. Datasets are shared by every user of the
/// server (versions are append-only, so nobody can destroy another's data); deployments and
/// monitors follow the registered models they serve; the registry's change feed and webhooks
/// are server-wide (admins).
fn loopml_rule(method: &Method, r: &str) -> Option<Rule> {
    use Action::*;
    use Subject::*;
    let get = *method == Method::GET;
    let first = r.split('/').next().unwrap_or(r);
    let rule = match first {
        "datasets" | "dataset-checks" => Rule::AnyUser,
        "deployments" => {
            let rest = r.strip_prefix("deployments").unwrap_or("");
            let tail = rest.trim_start_matches('/').split_once('/').map(|x| x.1);
            match (rest, tail, method) {
                ("", _, &Method::GET) => Rule::ListDeployments,
                ("", _, &Method::POST) => Rule::On(Deployment, Update),
                (_, None, &Method::GET) => Rule::On(Deployment, Read),
                (_, None, &Method::DELETE) => Rule::On(Deployment, Delete),
                (_, None, _) => Rule::On(Deployment, Update),
                (_, Some("log"), _) => Rule::On(Deployment, Read),
                // Ground truth for served predictions, sent by the application that calls it.
                (_, Some("feedback"), _) => Rule::On(Deployment, Use),
                // traffic, switch, promote, rollback.
                (_, Some(_), _) => Rule::On(Deployment, Update),
            }
        }
        "monitors" => {
            let rest = r.strip_prefix("monitors").unwrap_or("");
            let tail = rest.trim_start_matches('/').split_once('/').map(|x| x.1);
            match (rest, tail, method) {
                ("", _, &Method::GET) => Rule::ListMonitors,
                ("", _, _) => Rule::On(Monitor, Update),
                (_, None, &Method::GET) | (_, Some("results"), _) => Rule::On(Monitor, Read),
                (_, None, &Method::DELETE) => Rule::On(Monitor, Delete),
                _ => Rule::On(Monitor, Update),
            }
        }
        // Alerts name monitors and their verdicts, nothing of a model's data.
        "alerts" => Rule::AnyUser,
        "models" if r == "models/compare" => Rule::On(ModelField, Read),
        "registry" => match r.strip_prefix("registry/").unwrap_or("") {
            "lineage" | "model-card" if get => Rule::On(ModelUri, Read),
            _ => Rule::Admin,
        },
        // Retrieval indexes are built from shared datasets; evaluating one logs a run.
        "retrieval" => match r {
            "retrieval/evaluate" => Rule::On(Experiment, Update),
            _ => Rule::AnyUser,
        },
        "version" => Rule::AnyUser,
        _ => return None,
    };
    Some(rule)
}

fn trace_rule(method: &Method, version: &str, r: &str) -> Option<Rule> {
    use Action::*;
    use Subject::*;
    let rest = r.strip_prefix("traces").unwrap_or("");
    Some(match (rest, method) {
        // StartTraceV3 / StartTrace: the body's location.
        ("", &Method::POST) => Rule::On(Experiment, Update),
        ("", _) => return None,
        ("/search", _) => Rule::SearchTraces,
        ("/delete-traces", _) => Rule::On(Experiment, Delete),
        ("/batchGet", _) | ("/get", _) => Rule::On(Trace, Read),
        ("/link-to-run", _) | ("/link-prompts", _) => Rule::On(Trace, Update),
        (_, &Method::GET) => Rule::On(Trace, Read),
        (_, &Method::DELETE) if version == "3.0" && rest.contains("/assessments/") => {
            Rule::On(Trace, Update)
        }
        _ => Rule::On(Trace, Update),
    })
}

/// The gateway's routes (OpenAI, Anthropic, LiteLLM management): its own keys decide.
fn is_gateway(path: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "/v1/",
        "/chat/",
        "/embeddings",
        "/key/",
        "/team/",
        "/user/",
        "/spend/",
        "/global/",
        "/gateway/",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p)) || path == "/models"
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Subject::*;

    #[test]
    fn mlflow_routes_get_mlflow_rules_and_unknown_ones_are_admin_only() {
        let get = Method::GET;
        let post = Method::POST;
        for prefix in ["/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/"] {
            let r = |m: &Method, p: &str| rule(m, &format!("{prefix}{p}"));
            assert_eq!(r(&get, "experiments/get"), Rule::On(Experiment, Read));
            assert_eq!(r(&post, "experiments/delete"), Rule::On(Experiment, Delete));
            assert_eq!(r(&post, "runs/log-batch"), Rule::On(Run, Update));
            assert_eq!(r(&post, "runs/create"), Rule::On(Experiment, Update));
            assert_eq!(r(&post, "registered-models/create"), Rule::CreateModel);
            assert_eq!(r(&post, "users/create"), Rule::AuthApi);
            assert_eq!(r(&get, "server-info"), Rule::ServerInfo);
            assert_eq!(r(&post, "no-such-route"), Rule::Admin);
        }
        assert_eq!(
            rule(
                &Method::DELETE,
                "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x"
            ),
            Rule::On(ArtifactPath, Delete)
        );
        assert_eq!(
            rule(&post, "/v1/traces"),
            Rule::On(ExperimentHeader, Update)
        );
        assert_eq!(rule(&post, "/v1/chat/completions"), Rule::Gateway);
        assert_eq!(rule(&get, "/health"), Rule::Public);
        assert_eq!(
            rule(&post, "/v2/models/churn/infer"),
            Rule::Inference(Action::Use)
        );
        assert_eq!(
            rule(&post, "/v2/models/churn/versions/2/infer"),
            Rule::Inference(Action::Use)
        );
        assert_eq!(
            rule(&get, "/v2/models/churn"),
            Rule::Inference(Action::Read)
        );
        assert_eq!(rule(&post, "/invocations"), Rule::Inference(Action::Use));
        assert_eq!(rule(&get, "/v2"), Rule::AnyUser);
        assert_eq!(rule(&post, "/v2/repository/models/churn/load"), Rule::Admin);
        assert_eq!(rule(&get, "/graphql"), Rule::Admin);
        assert_eq!(
            rule(&get, "/api/3.0/mlflow/traces/tr-1"),
            Rule::On(Trace, Read)
        );
        assert_eq!(
            rule(&post, "/api/3.0/mlflow/traces/search"),
            Rule::SearchTraces
        );
    }

    #[test]
    fn aliases_deployments_monitors_and_evaluation_datasets_are_declared() {
        let (get, post, del) = (Method::GET, Method::POST, Method::DELETE);
        let alias = "/api/2.0/mlflow/registered-models/alias";
        assert_eq!(rule(&get, alias), Rule::On(Model, Read));
        assert_eq!(rule(&post, alias), Rule::On(Model, Update));
        assert_eq!(rule(&del, alias), Rule::On(Model, Delete));
        let d = "/api/2.0/loopml/deployments";
        assert_eq!(rule(&get, d), Rule::ListDeployments);
        assert_eq!(rule(&post, d), Rule::On(Deployment, Update));
        assert_eq!(rule(&get, &format!("{d}/x")), Rule::On(Deployment, Read));
        assert_eq!(rule(&del, &format!("{d}/x")), Rule::On(Deployment, Delete));
        assert_eq!(
            rule(&post, &format!("{d}/x/promote")),
            Rule::On(Deployment, Update)
        );
        assert_eq!(
            rule(&post, &format!("{d}/x/feedback")),
            Rule::On(Deployment, Use)
        );
        let m = "/api/2.0/loopml/monitors";
        assert_eq!(rule(&get, m), Rule::ListMonitors);
        assert_eq!(rule(&post, m), Rule::On(Monitor, Update));
        assert_eq!(
            rule(&get, &format!("{m}/x/results")),
            Rule::On(Monitor, Read)
        );
        let e = "/api/3.0/mlflow/datasets";
        assert_eq!(
            rule(&post, &format!("{e}/create")),
            Rule::On(ExperimentIds, Update)
        );
        assert_eq!(rule(&get, &format!("{e}/d-1")), Rule::On(EvalDataset, Read));
        assert_eq!(
            rule(&del, &format!("{e}/d-1")),
            Rule::On(EvalDataset, Delete)
        );
        assert_eq!(
            rule(&del, &format!("{e}/d-1/tags/k")),
            Rule::On(EvalDataset, Update)
        );
        assert_eq!(
            rule(&post, &format!("{e}/d-1/add-experiments")),
            Rule::On(EvalDatasetLink, Update)
        );
        assert_eq!(
            rule(&del, "/api/2.0/mlflow/logged-models/m-1/tags/k"),
            Rule::On(LoggedModel, Update)
        );
        assert_eq!(rule(&get, "/api/2.0/loopml/registry/events"), Rule::Admin);
        assert_eq!(declared(&get, "/api/2.0/loopml/nope"), None);
        assert_eq!(declared(&get, "/api/2.0/mlflow/nope"), None);
    }
}
