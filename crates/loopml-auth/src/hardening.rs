//! Request hygiene in front of every route, with or without logins: the Host header checked
//! against an allow-list (DNS rebinding, CVE-2025-14279's class), cross-origin writes refused
//! (CSRF, CVE-2023-43472's class), and security headers on every answer.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which `Host` values are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `*`: any host (the check is off).
    any: bool,
    /// Exact names (lower case, no port) and `*.suffix` patterns.
    names: Vec<String>,
}

impl Default for AllowedHosts {
    /// MLflow's default: localhost and loopback or private addresses.
    fn default() -> Self {
        AllowedHosts {
            any: false,
            names: vec!["localhost".into()],
        }
    }
}

impl AllowedHosts {
    /// From `--allowed-hosts` (comma-separated; `*` for any; `*.example.com` patterns), added
    /// to the defaults.
    pub fn parse(list: &str) -> Self {
        let mut h = AllowedHosts::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                h.any = true;
            } else {
                h.names
                    .push(strip_port(&item.to_ascii_lowercase()).to_string());
            }
        }
        h
    }

    /// Adds one name (the address the server binds to, when it is a name).
    pub fn with(mut self, name: &str) -> Self {
        let n = strip_port(&name.to_ascii_lowercase()).to_string();
        if !n.is_empty() && !self.names.contains(&n) {
            self.names.push(n);
        }
        self
    }

    /// Whether a `Host` header value is served: an allowed name, or a loopback, private or
    /// link-local address (those cannot be rebound to from a public name).
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = strip_port(&host.to_ascii_lowercase()).to_string();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return local_ip(ip);
        }
        // `*.example.com` matches by its `.example.com` suffix (no allocation per request).
        self.names.iter().any(|n| {
            if n.starts_with("*.") {
                host.ends_with(&n[1..])
            } else {
                *n == host
            }
        })
    }
}

/// Loopback, private (RFC 1918, ULA) or link-local.
fn local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_loopback() || v.is_private() || v.is_link_local() || v.is_unspecified()
        }
        IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
                || v.to_ipv4_mapped().is_some_and(|m| local_ip(IpAddr::V4(m)))
        }
    }
}

/// `host` without `:port` (`[::1]:5000` → `[::1]`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error_code": "PERMISSION_DENIED", "message": message}).to_string(),
    )
        .into_response()
}

/// The layer (for `axum::middleware::from_fn_with_state`).
pub async fn harden(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    // Refusals carry the same headers as every other answer.
    let mut resp = check(&hosts, req, next).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn check(hosts: &AllowedHosts, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(h) = &host
        && !hosts.allows(h)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "Invalid Host header - possible DNS rebinding attack detected; add the name to \
             --allowed-hosts",
        );
    }
    // A browser's cross-origin write: its Origin names another site than the one it writes to.
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if write
        && let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        && origin != "null"
    {
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        let same = host
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
        if !same && !hosts.allows(origin_host) {
            return refuse(StatusCode::FORBIDDEN, "Cross-origin request blocked");
        }
    }
    if write && let Some(why) = not_json(&req) {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error_code": "INVALID_PARAMETER_VALUE", "message": why})
                .to_string(),
        )
            .into_response();
    }
    next.run(req).await
}

/// Why a write to MLflow's JSON API is refused for its content type, if it is: a body that
/// is not declared JSON is what a cross-site form or `text/plain` fetch sends without a CORS
/// preflight (CVE-2023-43472), so MLflow 3.17 refuses it and so does loopml. Artifact
/// transfers (`mlflow-artifacts`, the UI's `upload-artifact`) carry files and are exempt.
fn not_json(req: &Request) -> Option<&'static str> {
    let path = req.uri().path();
    let api = path
        .strip_prefix("/api/")
        .or_else(|| path.strip_prefix("/ajax-api/"))?;
    let rest = api
        .strip_prefix("2.0/mlflow/")
        .or_else(|| api.strip_prefix("3.0/mlflow/"))?;
    if rest == "upload-artifact" {
        return None;
    }
    let h = req.headers();
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    if !has_body {
        return None;
    }
    match h
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => Some("Bad Request. Content-Type header is missing."),
        Some(ct) if loopml_tracking::api::is_json(ct) => None,
        Some(_) => Some("Content-Type must be one of ['application/json']"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_like_mlflow_with_patterns() {
        let d = AllowedHosts::default();
        for ok in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "10.1.2.3",
            "192.168.0.9:80",
            "172.16.0.1",
            "[fd00::1]",
            "169.254.1.1",
        ] {
            assert!(d.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:5000",
            "8.8.8.8",
            "[2001:db8::1]",
            "localhost.evil.com",
        ] {
            assert!(!d.allows(bad), "{bad}");
        }
        let h = AllowedHosts::parse("loopml.internal, *.svc.cluster.local");
        assert!(h.allows("loopml.internal:5000"));
        assert!(h.allows("server.ml.svc.cluster.local"));
        assert!(!h.allows("svc.cluster.local.evil.com"));
        assert!(AllowedHosts::parse("*").allows("anything.example"));
        assert!(
            AllowedHosts::default()
                .with("ml.example.com")
                .allows("ml.example.com:443")
        );
    }
}
