//! HTTP routes: MLflow's model registry REST API (`/api/2.0/mlflow/registered-models/...`,
//! `/model-versions/...`, also under `/ajax-api`) and loopml's registry extensions under
//! `/api/2.0/loopml/registry/...` (change feed, lineage, model cards).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use loopml_tracking::api::{Mlflow, WireKeyValue};
use loopml_tracking::model::KeyValue;
use serde::{Deserialize, Serialize};

use crate::api::{self, EventJson, ModelVersionJson, RegisteredModelJson};
use crate::card::{self, CardFormat};
use crate::error::{Error, Result};
use crate::service::{NewModelVersion, RegistryService};
use crate::validation::parse_version;
use crate::webhooks::{self, WebhookSpec, WebhookStatus};

use loopml_tracking::routes::{empty, json};

fn required(v: Option<String>, name: &str) -> Result<String> {
    Ok(loopml_tracking::routes::required(v, name)?)
}

fn version(v: Option<String>) -> Result<i64> {
    parse_version(&required(v, "version")?)
}

fn key_values(items: Vec<WireKeyValue>) -> Result<Vec<KeyValue>> {
    Ok(loopml_tracking::routes::key_values(items)?)
}

/// The MLflow extractor reports tracking errors; lift them into registry errors.
type Req<T> = std::result::Result<Mlflow<T>, loopml_tracking::Error>;

fn body<T>(r: Req<T>) -> Result<T> {
    r.map(|Mlflow(t)| t).map_err(Error::from)
}

#[derive(Serialize)]
struct ModelResponse<'a> {
    registered_model: RegisteredModelJson<'a>,
}

#[derive(Serialize)]
struct VersionResponse<'a> {
    model_version: ModelVersionJson<'a>,
}

// ------------------------------------------------------------ registered models

async fn create_registered_model(
    State(s): State<RegistryService>,
    r: Req<api::CreateRegisteredModel>,
) -> Result<Response> {
    let r = body(r)?;
    let m = s
        .create_registered_model(
            required(r.name, "name")?,
            key_values(r.tags)?,
            r.description.filter(|d| !d.is_empty()),
        )
        .await?;
    Ok(json(&ModelResponse {
        registered_model: (&m).into(),
    }))
}

async fn get_registered_model(
    State(s): State<RegistryService>,
    r: Req<api::ModelRef>,
) -> Result<Response> {
    let m = s
        .get_registered_model(required(body(r)?.name, "name")?)
        .await?;
    Ok(json(&ModelResponse {
        registered_model: (&m).into(),
    }))
}

async fn update_registered_model(
    State(s): State<RegistryService>,
    r: Req<api::UpdateRegisteredModel>,
) -> Result<Response> {
    let r = body(r)?;
    let m = s
        .update_registered_model(required(r.name, "name")?, r.description)
        .await?;
    Ok(json(&ModelResponse {
        registered_model: (&m).into(),
    }))
}

async fn rename_registered_model(
    State(s): State<RegistryService>,
    r: Req<api::RenameRegisteredModel>,
) -> Result<Response> {
    let r = body(r)?;
    let m = s
        .rename_registered_model(required(r.name, "name")?, required(r.new_name, "new_name")?)
        .await?;
    Ok(json(&ModelResponse {
        registered_model: (&m).into(),
    }))
}

async fn delete_registered_model(
    State(s): State<RegistryService>,
    r: Req<api::ModelRef>,
) -> Result<Response> {
    s.delete_registered_model(required(body(r)?.name, "name")?)
        .await?;
    Ok(empty())
}

#[derive(Serialize)]
struct ModelsPage<'a> {
    registered_models: Vec<RegisteredModelJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<&'a str>,
}

async fn search_registered_models(
    State(s): State<RegistryService>,
    r: Req<api::Search>,
) -> Result<Response> {
    let r = body(r)?;
    let page = s
        .search_registered_models(r.filter, r.max_results, r.order_by, r.page_token)
        .await?;
    Ok(json(&ModelsPage {
        registered_models: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_page_token.as_deref(),
    }))
}

#[derive(Serialize)]
struct VersionsList<'a> {
    model_versions: Vec<ModelVersionJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<&'a str>,
}

async fn get_latest_versions(
    State(s): State<RegistryService>,
    r: Req<api::GetLatestVersions>,
) -> Result<Response> {
    let r = body(r)?;
    let versions = s
        .get_latest_versions(required(r.name, "name")?, r.stages)
        .await?;
    Ok(json(&VersionsList {
        model_versions: versions.iter().map(Into::into).collect(),
        next_page_token: None,
    }))
}

async fn set_registered_model_tag(
    State(s): State<RegistryService>,
    r: Req<api::TagRequest>,
) -> Result<Response> {
    let r = body(r)?;
    let tag = KeyValue {
        key: required(r.key, "key")?,
        value: r.value.unwrap_or_default(),
    };
    s.set_registered_model_tag(required(r.name, "name")?, tag)
        .await?;
    Ok(empty())
}

async fn delete_registered_model_tag(
    State(s): State<RegistryService>,
    r: Req<api::TagRequest>,
) -> Result<Response> {
    let r = body(r)?;
    s.delete_registered_model_tag(required(r.name, "name")?, required(r.key, "key")?)
        .await?;
    Ok(empty())
}

async fn set_alias(
    State(s): State<RegistryService>,
    r: Req<api::AliasRequest>,
) -> Result<Response> {
    let r = body(r)?;
    s.set_alias(
        required(r.name, "name")?,
        required(r.alias, "alias")?,
        version(r.version)?,
    )
    .await?;
    Ok(empty())
}

async fn delete_alias(
    State(s): State<RegistryService>,
    r: Req<api::AliasRequest>,
) -> Result<Response> {
    let r = body(r)?;
    s.delete_alias(required(r.name, "name")?, required(r.alias, "alias")?)
        .await?;
    Ok(empty())
}

async fn get_by_alias(
    State(s): State<RegistryService>,
    r: Req<api::AliasRequest>,
) -> Result<Response> {
    let r = body(r)?;
    let mv = s
        .get_model_version_by_alias(required(r.name, "name")?, required(r.alias, "alias")?)
        .await?;
    Ok(json(&VersionResponse {
        model_version: (&mv).into(),
    }))
}

// ------------------------------------------------------------ model versions

async fn create_model_version(
    State(s): State<RegistryService>,
    r: Req<api::CreateModelVersion>,
) -> Result<Response> {
    let r = body(r)?;
    let mv = s
        .create_model_version(NewModelVersion {
            name: required(r.name, "name")?,
            source: required(r.source, "source")?,
            run_id: r.run_id,
            model_id: r.model_id,
            tags: key_values(r.tags)?,
            run_link: r.run_link,
            description: r.description,
        })
        .await?;
    Ok(json(&VersionResponse {
        model_version: (&mv).into(),
    }))
}

async fn get_model_version(
    State(s): State<RegistryService>,
    r: Req<api::VersionRef>,
) -> Result<Response> {
    let r = body(r)?;
    let mv = s
        .get_model_version(required(r.name, "name")?, version(r.version)?)
        .await?;
    Ok(json(&VersionResponse {
        model_version: (&mv).into(),
    }))
}

async fn update_model_version(
    State(s): State<RegistryService>,
    r: Req<api::VersionRef>,
) -> Result<Response> {
    let r = body(r)?;
    let mv = s
        .update_model_version(
            required(r.name, "name")?,
            version(r.version)?,
            r.description,
        )
        .await?;
    Ok(json(&VersionResponse {
        model_version: (&mv).into(),
    }))
}

async fn transition_stage(
    State(s): State<RegistryService>,
    r: Req<api::TransitionStage>,
) -> Result<Response> {
    let r = body(r)?;
    let mv = s
        .transition_stage(
            required(r.name, "name")?,
            version(r.version)?,
            required(r.stage, "stage")?,
            r.archive_existing_versions.unwrap_or(false),
        )
        .await?;
    Ok(json(&VersionResponse {
        model_version: (&mv).into(),
    }))
}

async fn delete_model_version(
    State(s): State<RegistryService>,
    r: Req<api::VersionRef>,
) -> Result<Response> {
    let r = body(r)?;
    s.delete_model_version(required(r.name, "name")?, version(r.version)?)
        .await?;
    Ok(empty())
}

async fn get_download_uri(
    State(s): State<RegistryService>,
    r: Req<api::VersionRef>,
) -> Result<Response> {
    let r = body(r)?;
    let uri = s
        .get_download_uri(required(r.name, "name")?, version(r.version)?)
        .await?;
    Ok(json(&serde_json::json!({ "artifact_uri": uri })))
}

async fn search_model_versions(
    State(s): State<RegistryService>,
    r: Req<api::Search>,
) -> Result<Response> {
    let r = body(r)?;
    let page = s
        .search_model_versions(r.filter, r.max_results, r.order_by, r.page_token)
        .await?;
    Ok(json(&VersionsList {
        model_versions: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_page_token.as_deref(),
    }))
}

async fn set_model_version_tag(
    State(s): State<RegistryService>,
    r: Req<api::TagRequest>,
) -> Result<Response> {
    let r = body(r)?;
    let tag = KeyValue {
        key: required(r.key, "key")?,
        value: r.value.unwrap_or_default(),
    };
    s.set_model_version_tag(required(r.name, "name")?, version(r.version)?, tag)
        .await?;
    Ok(empty())
}

async fn delete_model_version_tag(
    State(s): State<RegistryService>,
    r: Req<api::TagRequest>,
) -> Result<Response> {
    let r = body(r)?;
    s.delete_model_version_tag(
        required(r.name, "name")?,
        version(r.version)?,
        required(r.key, "key")?,
    )
    .await?;
    Ok(empty())
}

// ------------------------------------------------------------ change feed

/// Query of `GET /api/2.0/loopml/registry/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Return events with a sequence number greater than this (default 0).
    #[serde(default)]
    after: Option<i64>,
    /// At most this many events (default 100, at most 10,000).
    #[serde(default)]
    limit: Option<i64>,
    /// Only events of this registered model.
    #[serde(default)]
    name: Option<String>,
    /// Long-poll: wait up to this many seconds for an event (default 0, at most 60).
    #[serde(default)]
    wait_s: Option<f64>,
}

#[derive(Serialize)]
struct EventsPage<'a> {
    events: Vec<EventJson<'a>>,
    /// Pass as `after` to continue.
    next_after: i64,
    /// Highest sequence number in the feed.
    last_seq: i64,
}

async fn events(
    State(s): State<RegistryService>,
    q: std::result::Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(q) = q.map_err(|e| Error::InvalidParameter(format!("Invalid query: {e}")))?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(Error::InvalidParameter("'after' must be ≥ 0".into()));
    }
    let wait = q.wait_s.unwrap_or(0.0);
    if !(0.0..=60.0).contains(&wait) {
        return Err(Error::InvalidParameter(
            "'wait_s' must be between 0 and 60 seconds".into(),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(Error::InvalidParameter(
            "'limit' must be between 1 and 10000".into(),
        ));
    }
    let (events, last) = s
        .events(
            after,
            limit,
            q.name.filter(|n| !n.is_empty()),
            Duration::from_secs_f64(wait),
        )
        .await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(json(&EventsPage {
        events: events.iter().map(Into::into).collect(),
        next_after,
        last_seq: last,
    }))
}

// ------------------------------------------------------------ webhooks

fn webhook_spec(r: api::WebhookRequest, creating: bool) -> Result<WebhookSpec> {
    let events = if r.events.is_empty() {
        None
    } else {
        Some(
            r.events
                .iter()
                .map(|e| {
                    webhooks::event_name(
                        e.entity.as_deref().unwrap_or(""),
                        e.action.as_deref().unwrap_or(""),
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let status = match r.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(WebhookStatus::parse(s).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "Invalid webhook status '{s}': use ACTIVE or DISABLED."
            ))
        })?),
    };
    if creating && events.is_none() {
        return Err(Error::InvalidParameter(
            "Webhook events cannot be empty.".into(),
        ));
    }
    Ok(WebhookSpec {
        name: r.name,
        description: r.description,
        url: r.url,
        events,
        secret: r.secret,
        status,
    })
}

#[derive(Serialize)]
struct WebhookResponse<'a> {
    webhook: api::WebhookJson<'a>,
}

async fn create_webhook(
    State(s): State<RegistryService>,
    r: Req<api::WebhookRequest>,
) -> Result<Response> {
    let w = s.create_webhook(webhook_spec(body(r)?, true)?).await?;
    Ok(json(&WebhookResponse {
        webhook: (&w).into(),
    }))
}

async fn list_webhooks(State(s): State<RegistryService>) -> Result<Response> {
    let hooks = s.list_webhooks().await?;
    let list: Vec<api::WebhookJson<'_>> = hooks.iter().map(Into::into).collect();
    Ok(json(&serde_json::json!({ "webhooks": list })))
}

async fn get_webhook(State(s): State<RegistryService>, Path(id): Path<String>) -> Result<Response> {
    let w = s.get_webhook(id).await?;
    Ok(json(&WebhookResponse {
        webhook: (&w).into(),
    }))
}

async fn update_webhook(
    State(s): State<RegistryService>,
    Path(id): Path<String>,
    r: Req<api::WebhookRequest>,
) -> Result<Response> {
    let w = s.update_webhook(id, webhook_spec(body(r)?, false)?).await?;
    Ok(json(&WebhookResponse {
        webhook: (&w).into(),
    }))
}

async fn delete_webhook(
    State(s): State<RegistryService>,
    Path(id): Path<String>,
) -> Result<Response> {
    s.delete_webhook(id).await?;
    Ok(empty())
}

async fn test_webhook(
    State(s): State<RegistryService>,
    Path(id): Path<String>,
    r: Req<api::TestWebhookRequest>,
) -> Result<Response> {
    let event = match body(r)?.event {
        Some(e) => Some(webhooks::event_name(
            e.entity.as_deref().unwrap_or(""),
            e.action.as_deref().unwrap_or(""),
        )?),
        None => None,
    };
    let d = s.test_webhook(id, event).await?;
    // MLflow's test result counts any answer below 400 as success.
    let success = d.status_code.is_some_and(|c| c < 400);
    Ok(json(&serde_json::json!({ "result": {
        "success": success,
        "response_status": d.status_code,
        "response_body": d.response_body,
        "error_message": if success { None } else { d.error },
    }})))
}

/// Query of the delivery log.
#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    /// At most this many attempts, newest first (default 100).
    #[serde(default)]
    limit: Option<i64>,
}

async fn webhook_deliveries(
    State(s): State<RegistryService>,
    Path(id): Path<String>,
    q: QueryReq<DeliveriesQuery>,
) -> Result<Response> {
    let q = query(q)?;
    let d = s.webhook_deliveries(id, q.limit.unwrap_or(100)).await?;
    Ok(json(&serde_json::json!({ "deliveries": d })))
}

fn registry_routes() -> Router<RegistryService> {
    Router::new()
        .route("/registered-models/create", post(create_registered_model))
        .route("/registered-models/get", get(get_registered_model))
        .route("/registered-models/update", patch(update_registered_model))
        .route("/registered-models/rename", post(rename_registered_model))
        .route(
            "/registered-models/delete",
            axum::routing::delete(delete_registered_model),
        )
        .route("/registered-models/search", get(search_registered_models))
        .route(
            "/registered-models/get-latest-versions",
            post(get_latest_versions).get(get_latest_versions),
        )
        .route("/registered-models/set-tag", post(set_registered_model_tag))
        .route(
            "/registered-models/delete-tag",
            axum::routing::delete(delete_registered_model_tag),
        )
        .route(
            "/registered-models/alias",
            post(set_alias).delete(delete_alias).get(get_by_alias),
        )
        .route("/model-versions/create", post(create_model_version))
        .route("/model-versions/get", get(get_model_version))
        .route("/model-versions/update", patch(update_model_version))
        .route("/model-versions/transition-stage", post(transition_stage))
        .route(
            "/model-versions/delete",
            axum::routing::delete(delete_model_version),
        )
        .route("/model-versions/search", get(search_model_versions))
        .route("/model-versions/get-download-uri", get(get_download_uri))
        .route("/model-versions/set-tag", post(set_model_version_tag))
        .route(
            "/model-versions/delete-tag",
            axum::routing::delete(delete_model_version_tag),
        )
        .route("/webhooks", post(create_webhook).get(list_webhooks))
        .route(
            "/webhooks/{id}",
            get(get_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route("/webhooks/{id}/test", post(test_webhook))
}

/// `/model-versions/get-artifact?name=&version=&path=`: one file of a version's model, as the
/// MLflow UI previews it (attachment, sniff-proof media type). The path is checked before the
/// version is looked up, in mlflow server's words (`Invalid path`).
async fn get_model_version_artifact(
    State(s): State<RegistryService>,
    r: Req<api::VersionArtifact>,
) -> Result<Response> {
    let r = body(r)?;
    let path = required(r.path, "path")?;
    let rel = loopml_tracking::ui::ui_artifact_path(&path)?;
    let uri = s
        .get_download_uri(required(r.name, "name")?, version(r.version)?)
        .await?;
    let root = loopml_tracking::routes::proxied_artifact_path(&uri).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "The model version's files at '{uri}' are not served by this server"
        ))
    })?;
    Ok(loopml_tracking::ui::send_artifact(s.tracking().artifacts(), &root.join(&rel)).await?)
}

/// Query of the lineage and model-card endpoints: a `models:/` URI, or a name and version.
#[derive(Debug, Deserialize)]
pub struct ModelQuery {
    /// `models:/name/3`, `models:/name@alias`, `models:/name/Production`, `models:/name/latest`.
    #[serde(default)]
    uri: Option<String>,
    /// Registered model name (with `version`).
    #[serde(default)]
    name: Option<String>,
    /// Version number (with `name`).
    #[serde(default)]
    version: Option<String>,
    /// Output format: lineage `json` (default) or `text`; card `html` (default), `md` or `json`.
    #[serde(default)]
    format: Option<String>,
}

impl ModelQuery {
    fn uri(&self) -> Result<String> {
        match (&self.uri, &self.name) {
            (Some(u), _) if !u.is_empty() => Ok(u.clone()),
            (_, Some(n)) if !n.is_empty() => match self.version.as_deref() {
                None | Some("") | Some("latest") => Ok(format!("models:/{n}/latest")),
                Some(v) => Ok(format!("models:/{n}/{}", parse_version(v)?)),
            },
            _ => Err(Error::InvalidParameter(
                "Give 'uri' (models:/name/version, models:/name@alias, models:/name/stage) or \
                 'name' and 'version'."
                    .into(),
            )),
        }
    }
}

type QueryReq<T> = std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryReq<T>) -> Result<T> {
    q.map(|Query(t)| t)
        .map_err(|e| Error::InvalidParameter(format!("Invalid query: {e}")))
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn lineage(State(s): State<RegistryService>, q: QueryReq<ModelQuery>) -> Result<Response> {
    let q = query(q)?;
    let l = s.lineage(&q.uri()?).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(json(&l)),
        "text" => Ok(text("text/plain; charset=utf-8", l.to_text())),
        other => Err(Error::InvalidParameter(format!(
            "Unknown lineage format '{other}': use json or text."
        ))),
    }
}

async fn model_card(State(s): State<RegistryService>, q: QueryReq<ModelQuery>) -> Result<Response> {
    let q = query(q)?;
    let format = q.format.clone().unwrap_or_else(|| "html".into());
    if format != "json" && CardFormat::parse(&format).is_none() {
        return Err(Error::InvalidParameter(format!(
            "Unknown model card format '{format}': use html, md or json."
        )));
    }
    let l = s.lineage(&q.uri()?).await?;
    Ok(match CardFormat::parse(&format) {
        Some(CardFormat::Html) => text("text/html; charset=utf-8", card::html(&l)),
        Some(CardFormat::Markdown) => text("text/markdown; charset=utf-8", card::markdown(&l)),
        None => json(&l),
    })
}

fn loopml_routes() -> Router<RegistryService> {
    Router::new()
        .route("/events", get(events))
        .route("/lineage", get(lineage))
        .route("/model-card", get(model_card))
        .route("/webhooks/{id}/deliveries", get(webhook_deliveries))
}

/// The registry router: MLflow's registry API under `/api` and `/ajax-api`, and loopml's
/// extensions under `/api/2.0/loopml/registry`.
pub fn router(service: RegistryService) -> Router {
    let mut r = Router::new();
    for prefix in ["/api", "/ajax-api"] {
        r = r.nest(&format!("{prefix}/2.0/mlflow"), registry_routes());
    }
    r.nest("/api/2.0/loopml/registry", loopml_routes())
        .route(
            "/model-versions/get-artifact",
            get(get_model_version_artifact),
        )
        .route(
            "/graphql",
            get(crate::graphql::get_graphql)
                .post(crate::graphql::post_graphql)
                .layer(axum::extract::DefaultBodyLimit::max(256 * 1024)),
        )
        .with_state(service)
}
