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
    /// MLflow's auth API and loopml's token and audit API: the handler checks.
    AuthApi,
    /// The gateway's own routes: its master key and virtual keys decide.
    Gateway,
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

/// The rule for a request.
pub fn rule(method: &Method, path: &str) -> Rule {
    use Action::*;
    use Subject::*;
    match path {
        "/health" | "/ready" | "/ping" | "/favicon.ico" | "/v2/health/live"
        | "/v2/health/ready" => {
            return Rule::Public;
        }
        "/version" | "/api/2.0/loopml/version" | "/metrics" => return Rule::AnyUser,
        "/v1/traces" => return Rule::On(ExperimentHeader, Update),
        _ => {}
    }
    if path.starts_with("/static") {
        return Rule::Public;
    }
    // Inference and model metadata (Open Inference Protocol, MLflow /invocations): any user;
    // loading and unloading models (the repository API) stays with admins.
    if path == "/invocations" || path == "/v2" || path.starts_with("/v2/models/") {
        return Rule::AnyUser;
    }
    if is_gateway(path) {
        return Rule::Gateway;
    }
    let Some((version, rest)) = mlflow_rest(path) else {
        return Rule::Admin;
    };
    if let Some(r) = rest.strip_prefix("mlflow-artifacts/") {
        return match (r.split_once('/').map(|x| x.0).unwrap_or(r), method) {
            ("artifacts", &Method::GET) => Rule::On(ArtifactPath, Read),
            ("artifacts", &Method::PUT) => Rule::On(ArtifactPath, Update),
            // Deleting an artifact needs MANAGE (CVE-2024-4263: EDIT could delete).
            ("artifacts", &Method::DELETE) => Rule::On(ArtifactPath, Delete),
            ("mpu", _) => Rule::On(ArtifactPath, Update),
            ("presigned", _) => Rule::On(ArtifactPath, Read),
            _ => Rule::Admin,
        };
    }
    let Some(r) = rest.strip_prefix("mlflow/") else {
        return Rule::Admin;
    };
    if r == "server-info" {
        return Rule::ServerInfo;
    }
    if r.starts_with("users/")
        || r.starts_with("roles/")
        || r.starts_with("experiments/permissions/")
        || r.starts_with("registered-models/permissions/")
        || r.starts_with("tokens/")
        || r == "tokens"
        || r == "audit"
    {
        return Rule::AuthApi;
    }
    if r.starts_with("traces") {
        return trace_rule(method, version, r);
    }
    if let Some(lm) = r.strip_prefix("logged-models") {
        return match (lm, method) {
            ("", &Method::POST) => Rule::On(Experiment, Update),
            ("/search", _) => Rule::SearchRuns,
            (_, &Method::GET) => Rule::On(LoggedModel, Read),
            (_, &Method::DELETE) => Rule::On(LoggedModel, Delete),
            _ => Rule::On(LoggedModel, Update),
        };
    }
    match r {
        "experiments/create" => Rule::CreateExperiment,
        "experiments/get" => Rule::On(Experiment, Read),
        "experiments/get-by-name" => Rule::On(ExperimentName, Read),
        "experiments/search" | "experiments/list" => Rule::SearchExperiments,
        "experiments/update"
        | "experiments/set-experiment-tag"
        | "experiments/delete-experiment-tag" => Rule::On(Experiment, Update),
        "experiments/delete" | "experiments/restore" => Rule::On(Experiment, Delete),
        "experiments/search-datasets" => Rule::SearchRuns,
        "runs/create" => Rule::On(Experiment, Update),
        "runs/get" | "metrics/get-history" | "artifacts/list" | "get-artifact" => {
            Rule::On(Run, Read)
        }
        "metrics/get-history-bulk" | "metrics/get-history-bulk-interval" => Rule::On(Run, Read),
        "runs/update" | "runs/log-metric" | "runs/log-parameter" | "runs/set-tag"
        | "runs/delete-tag" | "runs/log-batch" | "runs/log-inputs" | "runs/outputs"
        | "runs/log-model" | "upload-artifact" => Rule::On(Run, Update),
        "runs/delete" | "runs/restore" => Rule::On(Run, Delete),
        "runs/search" => Rule::SearchRuns,
        "registered-models/create" => Rule::CreateModel,
        "registered-models/get"
        | "registered-models/get-latest-versions"
        | "registered-models/alias"
        | "model-versions/get"
        | "model-versions/get-download-uri"
        | "model-versions/get-artifact"
        | "model-card"
        | "lineage" => Rule::On(Model, Read),
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
        _ if r.starts_with("registered-models/alias") => match *method {
            Method::GET => Rule::On(Model, Read),
            Method::DELETE => Rule::On(Model, Delete),
            _ => Rule::On(Model, Update),
        },
        _ => Rule::Admin,
    }
}

fn trace_rule(method: &Method, version: &str, r: &str) -> Rule {
    use Action::*;
    use Subject::*;
    let rest = r.strip_prefix("traces").unwrap_or("");
    match (rest, method) {
        // StartTraceV3 / StartTrace: the body's location.
        ("", &Method::POST) => Rule::On(Experiment, Update),
        ("/search", _) => Rule::SearchTraces,
        ("/delete-traces", _) => Rule::On(Experiment, Delete),
        ("/batchGet", _) | ("/get", _) => Rule::On(Trace, Read),
        ("/link-to-run", _) | ("/link-prompts", _) => Rule::On(Trace, Update),
        (_, &Method::GET) => Rule::On(Trace, Read),
        (_, &Method::DELETE) if version == "3.0" && rest.contains("/assessments/") => {
            Rule::On(Trace, Update)
        }
        (_, &Method::DELETE) => Rule::On(Trace, Update),
        _ => Rule::On(Trace, Update),
    }
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
        assert_eq!(rule(&post, "/v2/models/churn/infer"), Rule::AnyUser);
        assert_eq!(rule(&post, "/v2/repository/models/churn/load"), Rule::Admin);
        assert_eq!(rule(&post, "/api/2.0/loopml/deployments"), Rule::Admin);
        assert_eq!(
            rule(&get, "/api/3.0/mlflow/traces/tr-1"),
            Rule::On(Trace, Read)
        );
        assert_eq!(
            rule(&post, "/api/3.0/mlflow/traces/search"),
            Rule::SearchTraces
        );
    }
}
