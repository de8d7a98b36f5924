//! The HTTP routes: OTLP `POST /v1/traces`, MLflow's v3 trace routes and the v2 routes the
//! 3.17 client still calls (tags, deletion, links).

use std::collections::HashMap;
use std::io::Read;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::TraceInfo;
use crate::otlp;
use crate::service::{Search, TraceService};

/// Largest OTLP or trace body taken.
const MAX_BODY: usize = 64 * 1024 * 1024;

fn ok(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn body_json(b: &[u8]) -> Result<Value> {
    if b.is_empty() {
        return Ok(json!({}));
    }
    // Tags, metadata and assessments land in text columns, which cannot hold a NUL on
    // PostgreSQL (span payloads arrive through OTLP and are stored as JSON text).
    if loopml_tracking::api::has_escaped_nul(b) {
        return Err(Error::InvalidParameter(
            "Invalid request: a string contains a NUL character (\\u0000), which tags, \
             metadata and assessments may not contain."
                .into(),
        ));
    }
    let v: Value = serde_json::from_slice(b)
        .map_err(|e| Error::InvalidParameter(format!("The request body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::InvalidParameter(
            "The request body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

fn decode_pct(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, repeated keys kept in order.
pub(crate) fn query(raw: Option<String>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode_pct(k)).or_default().push(decode_pct(v));
    }
    out
}

pub(crate) fn one<'a>(q: &'a HashMap<String, Vec<String>>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(|v| v.first()).map(String::as_str)
}

fn trace_json(info: &TraceInfo, spans: &[String]) -> String {
    format!(
        "{{\"trace_info\":{},\"spans\":[{}]}}",
        info.to_json(),
        spans.join(",")
    )
}

/// `POST /v1/traces`: OTLP/HTTP, protobuf or JSON, gzip or deflate.
async fn otlp_ingest(State(s): State<TraceService>, headers: HeaderMap, body: Bytes) -> Response {
    let fail = |status: StatusCode, m: String| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"detail": m}).to_string(),
        )
            .into_response()
    };
    let Some(exp) = headers
        .get("x-mlflow-experiment-id")
        .and_then(|v| v.to_str().ok())
    else {
        return fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the x-mlflow-experiment-id header is required: the experiment the spans go to".into(),
        );
    };
    let Ok(experiment_id) = exp.trim().parse::<i64>() else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("'{exp}' is not an experiment id"),
        );
    };
    let run_id = headers
        .get("x-mlflow-run-id")
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: Vec<u8> = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("identity") => body.to_vec(),
        Some(enc @ ("gzip" | "deflate")) => {
            let mut out = Vec::new();
            let limited = (MAX_BODY as u64) + 1;
            let read = if enc == "gzip" {
                flate2::read::GzDecoder::new(&body[..])
                    .take(limited)
                    .read_to_end(&mut out)
            } else {
                flate2::read::ZlibDecoder::new(&body[..])
                    .take(limited)
                    .read_to_end(&mut out)
            };
            if let Err(e) = read {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("cannot decompress the body: {e}"),
                );
            }
            if out.len() > MAX_BODY {
                return fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the decompressed body is larger than {MAX_BODY} bytes"),
                );
            }
            out
        }
        Some(other) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Content-Encoding '{other}' is not gzip or deflate"),
            );
        }
    };
    let json_body = ctype.starts_with("application/json");
    let spans = if ctype.starts_with("application/x-protobuf")
        || ctype.starts_with("application/protobuf")
    {
        otlp::decode_protobuf(&raw)
    } else if json_body {
        otlp::decode_json(&raw)
    } else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("Invalid Content-Type '{ctype}': application/x-protobuf or application/json"),
        );
    };
    let spans = match spans {
        Ok(s) => s,
        Err(e @ otlp::OtlpError::BadSpan(_)) => {
            return fail(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        }
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match s.log_spans(experiment_id, run_id, spans).await {
        Ok(_) if json_body => ok(json!({})),
        Ok(_) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Err(e) => {
            let (_, status) = e.code_and_status();
            fail(status, e.to_string())
        }
    }
}

/// `POST /api/3.0/mlflow/traces` (StartTraceV3).
async fn start_trace(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let info = TraceInfo::from_json(&v["trace"]["trace_info"])?;
    let stored = s.start_trace(info).await?;
    Ok(ok(json!({"trace": {"trace_info": stored.to_json()}})))
}

/// `GET /api/3.0/mlflow/traces/{trace_id}`: the trace's info.
async fn get_info(State(s): State<TraceService>, Path(id): Path<String>) -> Result<Response> {
    let info = s.get_info(&id).await?;
    Ok(ok(json!({"trace": {"trace_info": info.to_json()}})))
}

/// `GET /api/3.0/mlflow/traces/get?trace_id=&allow_partial=`: info and spans.
async fn get_trace(State(s): State<TraceService>, RawQuery(q): RawQuery) -> Result<Response> {
    let q = query(q);
    let id = one(&q, "trace_id")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::InvalidParameter("'trace_id' is required".into()))?
        .to_string();
    let mut found = s.traces(vec![id.clone()]).await?;
    let (info, spans) = found
        .pop()
        .ok_or_else(|| Error::NotFound(format!("Trace with ID '{id}' not found.")))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"trace\":{}}}", trace_json(&info, &spans)),
    )
        .into_response())
}

/// `GET /api/3.0/mlflow/traces/batchGet?trace_ids=…`.
async fn batch_get(State(s): State<TraceService>, RawQuery(q): RawQuery) -> Result<Response> {
    let q = query(q);
    let ids: Vec<String> = q.get("trace_ids").cloned().unwrap_or_default();
    if ids.len() > 100 {
        return Err(Error::InvalidParameter(
            "batchGet takes at most 100 trace ids".into(),
        ));
    }
    let found = s.traces(ids).await?;
    let parts: Vec<String> = found.iter().map(|(i, sp)| trace_json(i, sp)).collect();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"traces\":[{}]}}", parts.join(",")),
    )
        .into_response())
}

/// `POST /api/3.0/mlflow/traces/search`.
async fn search(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let mut experiment_ids = Vec::new();
    for loc in v["locations"].as_array().into_iter().flatten() {
        let e = &loc["mlflow_experiment"]["experiment_id"];
        let id = e
            .as_str()
            .and_then(|s| s.parse().ok())
            .or(e.as_i64())
            .ok_or_else(|| Error::InvalidParameter(format!("Invalid trace location {loc}")))?;
        experiment_ids.push(id);
    }
    // The v2 shape: experiment_ids.
    for e in v["experiment_ids"].as_array().into_iter().flatten() {
        if let Some(id) = e.as_str().and_then(|s| s.parse().ok()).or(e.as_i64()) {
            experiment_ids.push(id);
        }
    }
    let max_results = match &v["max_results"] {
        Value::Null => 100,
        m => m
            .as_u64()
            .or_else(|| m.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| Error::InvalidParameter("'max_results' must be a number".into()))?
            as usize,
    };
    let order_by = v["order_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let body = s
        .search_json(Search {
            experiment_ids,
            filter: v["filter"].as_str().unwrap_or("").to_string(),
            max_results,
            order_by,
            page_token: v["page_token"].as_str().map(str::to_string),
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `PATCH …/traces/{id}/tags`.
async fn set_tag(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let key = v["key"]
        .as_str()
        .ok_or_else(|| Error::InvalidParameter("'key' is required".into()))?;
    let value = v["value"]
        .as_str()
        .ok_or_else(|| Error::InvalidParameter("'value' is required".into()))?;
    s.set_tag(&id, key, value).await?;
    Ok(ok(json!({})))
}

/// `DELETE …/traces/{id}/tags` (key in the JSON body or the query).
async fn delete_tag(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let q = query(q);
    let key = v["key"]
        .as_str()
        .or(one(&q, "key"))
        .ok_or_else(|| Error::InvalidParameter("'key' is required".into()))?
        .to_string();
    s.delete_tag(&id, &key).await?;
    Ok(ok(json!({})))
}

/// `POST …/traces/delete-traces`.
async fn delete_traces(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let e = &v["experiment_id"];
    let experiment_id = e
        .as_str()
        .and_then(|s| s.parse().ok())
        .or(e.as_i64())
        .ok_or_else(|| Error::InvalidParameter("'experiment_id' is required".into()))?;
    let ids = v["request_ids"]
        .as_array()
        .or(v["trace_ids"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        });
    // An unset field means "no bound" (0 is a bound).
    let max_ts = match &v["max_timestamp_millis"] {
        Value::Null => None,
        m => Some(
            m.as_i64()
                .or_else(|| m.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    Error::InvalidParameter("'max_timestamp_millis' must be a number".into())
                })?,
        ),
    };
    let max_traces = match &v["max_traces"] {
        Value::Null => None,
        m => Some(
            m.as_i64()
                .or_else(|| m.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Error::InvalidParameter("'max_traces' must be a positive number".into())
                })?,
        ),
    };
    if ids.as_ref().is_some_and(|i| i.len() > 100) {
        return Err(Error::InvalidParameter(
            "delete-traces takes at most 100 ids".into(),
        ));
    }
    let n = s
        .delete_traces(experiment_id, ids, max_ts, max_traces)
        .await?;
    Ok(ok(json!({"traces_deleted": n})))
}

/// `POST …/traces/link-to-run`.
async fn link_to_run(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let run = v["run_id"]
        .as_str()
        .ok_or_else(|| Error::InvalidParameter("'run_id' is required".into()))?;
    let ids: Vec<String> = v["trace_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    s.link_to_run(ids, run.to_string()).await?;
    Ok(ok(json!({})))
}

/// `POST …/traces/link-prompts`.
async fn link_prompts(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let id = v["trace_id"]
        .as_str()
        .ok_or_else(|| Error::InvalidParameter("'trace_id' is required".into()))?;
    let prompts = v["prompt_versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let version = p["version"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| p["version"].as_i64().map(|n| n.to_string()))?;
                    Some((p["name"].as_str()?.to_string(), version))
                })
                .collect()
        })
        .unwrap_or_default();
    s.link_prompts(id.to_string(), prompts).await?;
    Ok(ok(json!({})))
}

/// `POST …/traces/{id}/assessments`.
async fn create_assessment(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let a = v["assessment"].clone();
    if !a.is_object() {
        return Err(Error::InvalidParameter("'assessment' is required".into()));
    }
    let a = s.create_assessment(&id, a).await?;
    Ok(ok(json!({"assessment": a})))
}

async fn get_assessment(
    State(s): State<TraceService>,
    Path((id, aid)): Path<(String, String)>,
) -> Result<Response> {
    Ok(ok(
        json!({"assessment": s.get_assessment(&id, &aid).await?}),
    ))
}

async fn update_assessment(
    State(s): State<TraceService>,
    Path((id, aid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let mask = match &v["update_mask"] {
        Value::String(m) => m.clone(),
        Value::Object(o) => o
            .get("paths")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    let a = s
        .update_assessment(&id, &aid, v["assessment"].clone(), &mask)
        .await?;
    Ok(ok(json!({"assessment": a})))
}

async fn delete_assessment(
    State(s): State<TraceService>,
    Path((id, aid)): Path<(String, String)>,
) -> Result<Response> {
    s.delete_assessment(&id, &aid).await?;
    Ok(ok(json!({})))
}

/// The trace routes.
pub fn router(s: TraceService) -> Router {
    let v3 = "/api/3.0/mlflow/traces";
    let v2 = "/api/2.0/mlflow/traces";
    let mut r = Router::new()
        .route("/v1/traces", post(otlp_ingest))
        .route(v3, post(start_trace))
        .route(&format!("{v3}/search"), post(search))
        .route(&format!("{v3}/get"), get(get_trace))
        .route(&format!("{v3}/batchGet"), get(batch_get))
        .route(&format!("{v3}/{{trace_id}}"), get(get_info))
        .route(
            &format!("{v3}/{{trace_id}}/assessments"),
            post(create_assessment),
        )
        .route(
            &format!("{v3}/{{trace_id}}/assessments/{{assessment_id}}"),
            get(get_assessment)
                .patch(update_assessment)
                .delete(delete_assessment),
        );
    for base in [v2, v3] {
        r = r
            .route(
                &format!("{base}/{{trace_id}}/tags"),
                axum::routing::patch(set_tag).delete(delete_tag),
            )
            .route(&format!("{base}/delete-traces"), post(delete_traces))
            .route(&format!("{base}/link-to-run"), post(link_to_run))
            .route(&format!("{base}/link-prompts"), post(link_prompts));
    }
    r.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(s.clone())
        .merge(crate::datasets::router(s.clone()))
        .merge(crate::scorers::router(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_keep_repeated_keys_and_decode() {
        let q = query(Some("trace_ids=tr-a&trace_ids=tr-b&x=a%20b+c".into()));
        assert_eq!(q["trace_ids"], vec!["tr-a", "tr-b"]);
        assert_eq!(one(&q, "x"), Some("a b c"));
        assert_eq!(decode_pct("100%"), "100%");
    }
}
