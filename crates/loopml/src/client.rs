//! Command-line clients of a running loopml server (`loopml lineage`, `loopml model-card`):
//! they ask the server over HTTP, so they work from any machine that can reach it.

use std::time::Duration;

use anyhow::{Context, bail};

/// The server a client command talks to: `--server`, else `LOOPML_SERVER`, else
/// `MLFLOW_TRACKING_URI` when it is an http(s) URL, else `http://127.0.0.1:5000`.
pub fn server_url(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("LOOPML_SERVER").ok())
        .or_else(|| {
            std::env::var("MLFLOW_TRACKING_URI")
                .ok()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:5000".into())
        .trim_end_matches('/')
        .to_string()
}

/// GETs `path` with query parameters; returns the body, or the server's error message.
pub fn get(server: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{server}{path}");
    let mut req = agent.get(&url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req
        .call()
        .with_context(|| format!("cannot reach the loopml server at {server} (start it with `loopml server`, or pass --server)"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let code = v["error_code"].as_str()?.to_string();
                let message = v["message"].as_str()?.to_string();
                Some(format!("{code}: {message}"))
            })
            .unwrap_or(body);
        bail!("{msg}");
    }
    Ok(body)
}

/// Writes command output to stdout; a reader that went away (`| head`) is not an error.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
