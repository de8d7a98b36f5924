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

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The server's `{error_code, message}` as one line, or the raw body.
fn error_message(body: String) -> String {
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let code = v["error_code"].as_str()?.to_string();
            let message = v["message"].as_str()?.to_string();
            Some(format!("{code}: {message}"))
        })
        .unwrap_or(body)
}

/// The answer's body (at most 256 MiB), or the server's error message as the error.
fn answer(mut resp: ureq::http::Response<ureq::Body>, url: &str) -> anyhow::Result<String> {
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        bail!("{}", error_message(body));
    }
    Ok(body)
}

/// POSTs a file's bytes (streamed) to `path`; returns the answer's body.
pub fn upload(
    server: &str,
    path: &str,
    query: &[(&str, &str)],
    file: &std::path::Path,
) -> anyhow::Result<String> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let url = format!("{server}{path}");
    let mut req = agent(Duration::from_secs(3600)).post(&url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let resp = req
        .header("Content-Type", "application/octet-stream")
        .send(ureq::SendBody::from_owned_reader(f))
        .with_context(|| format!("cannot reach the loopml server at {server} (start it with `loopml server`, or pass --server)"))?;
    answer(resp, &url)
}

/// GETs `path` into a local file (streamed; temp file, then rename).
pub fn download(server: &str, path: &str, out: &std::path::Path) -> anyhow::Result<u64> {
    let url = format!("{server}{path}");
    let mut resp = agent(Duration::from_secs(3600))
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach the loopml server at {server}"))?;
    if !resp.status().is_success() {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("{}", error_message(body));
    }
    let tmp = out.with_extension("loopml-partial");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let n = std::io::copy(&mut resp.body_mut().as_reader(), &mut f)
        .with_context(|| format!("downloading {url}"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(n)
}

/// GETs `path` with query parameters; returns the body, or the server's error message.
pub fn get(server: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
    let url = format!("{server}{path}");
    let mut req = agent(Duration::from_secs(60)).get(&url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let resp = req
        .call()
        .with_context(|| format!("cannot reach the loopml server at {server} (start it with `loopml server`, or pass --server)"))?;
    answer(resp, &url)
}

/// POSTs a text body (a suite, a JSON request) to `path`; returns the answer's body, or the
/// server's error message. Checks on large datasets may take minutes, hence the long timeout.
pub fn post_text(
    server: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> anyhow::Result<String> {
    let url = format!("{server}{path}");
    let resp = agent(Duration::from_secs(3600))
        .post(&url)
        .header("Content-Type", content_type)
        .send(body)
        .with_context(|| format!("cannot reach the loopml server at {server} (start it with `loopml server`, or pass --server)"))?;
    answer(resp, &url)
}

/// Sends a request with any method (PUT, DELETE, POST) and an optional text body; returns the
/// answer's body, or the server's error message.
pub fn send(
    server: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    let url = format!("{server}{path}");
    let agent = agent(Duration::from_secs(600));
    let reach = || {
        format!(
            "cannot reach the loopml server at {server} (start it with `loopml server`, or pass --server)"
        )
    };
    let resp = match (method, body) {
        ("PUT", b) => agent
            .put(&url)
            .header("Content-Type", content_type)
            .send(b.unwrap_or("")),
        ("DELETE", _) => agent.delete(&url).call(),
        (_, b) => agent
            .post(&url)
            .header("Content-Type", content_type)
            .send(b.unwrap_or("")),
    }
    .with_context(reach)?;
    answer(resp, &url)
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
