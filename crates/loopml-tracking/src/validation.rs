//! MLflow's server-side limits and name rules (values of MLflow 3.x), and page tokens.

use base64::Engine;

use crate::error::{Error, Result};

/// Maximum metrics in one log-batch request.
pub const MAX_BATCH_METRICS: usize = 1000;
/// Maximum params in one log-batch request.
pub const MAX_BATCH_PARAMS: usize = 100;
/// Maximum tags in one log-batch request.
pub const MAX_BATCH_TAGS: usize = 100;
/// Maximum entities in one log-batch request.
pub const MAX_BATCH_TOTAL: usize = 1000;
/// Maximum length of metric, param and tag keys.
pub const MAX_KEY_LEN: usize = 250;
/// Param values longer than this are truncated.
pub const MAX_PARAM_VALUE_LEN: usize = 6000;
/// Run tag values longer than this are truncated.
pub const MAX_TAG_VALUE_LEN: usize = 8000;
/// Maximum experiment tag value length (rejected above).
pub const MAX_EXPERIMENT_TAG_VALUE_LEN: usize = 20000;
/// Maximum experiment name length.
pub const MAX_EXPERIMENT_NAME_LEN: usize = 500;
/// Maximum `max_results` of a runs search.
pub const MAX_RUNS_SEARCH: i64 = 50000;
/// Maximum `max_results` of an experiments search.
pub const MAX_EXPERIMENTS_SEARCH: i64 = 50000;

/// Checks a metric, param or tag key: MLflow's character set, length, and no path tricks.
pub fn validate_key(key: &str, what: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "Invalid value \"\" for parameter '{what}' supplied: the key must not be empty."
        )));
    }
    if key.chars().count() > MAX_KEY_LEN {
        return Err(Error::InvalidParameter(format!(
            "'{what}' exceeds the maximum length of {MAX_KEY_LEN} characters (got {} for \
             \"{}…\").",
            key.chars().count(),
            key.chars().take(40).collect::<String>()
        )));
    }
    let ok_chars = key
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | ' ' | ':'));
    if !ok_chars {
        return Err(Error::InvalidParameter(format!(
            "Invalid value \"{key}\" for parameter '{what}' supplied: Names may only contain \
             alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and \
             slashes (/)."
        )));
    }
    if key.starts_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Error::InvalidParameter(format!(
            "Invalid value \"{key}\" for parameter '{what}' supplied: Names cannot resolve to a \
             different path when normalized (no leading '/', empty segments, '.' or '..')."
        )));
    }
    Ok(())
}

/// Truncates `value` to at most `max` characters (MLflow truncates long params and tags).
pub fn truncate(mut value: String, max: usize) -> String {
    if value.len() > max
        && let Some((idx, _)) = value.char_indices().nth(max)
    {
        value.truncate(idx);
    }
    value
}

/// Validates the name of an experiment.
pub fn validate_experiment_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidParameter(
            "Invalid experiment name: '' . The experiment name must be a non-empty string.".into(),
        ));
    }
    if name.chars().count() > MAX_EXPERIMENT_NAME_LEN {
        return Err(Error::InvalidParameter(format!(
            "Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LEN} characters."
        )));
    }
    // NUL and other control characters would be stored as sent (MLflow stores a NUL) and break
    // paths, logs and terminals; any other Unicode round-trips.
    if name.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidParameter(
            "Invalid experiment name: it must not contain NUL or other control characters.".into(),
        ));
    }
    Ok(())
}

/// Validates an experiment's `artifact_location` (CVE-2023-1177 / CVE-2024-1483's class: a
/// location MLflow accepted and later resolved to a local file). Refused: local paths (`file:`
/// or no scheme: this server never reads them, and a client would write to its own disk),
/// a fragment or query, a `..` segment in any encoding, control characters, over 1000 bytes.
/// The proxy (`mlflow-artifacts:/…`) and object stores (`s3://`, `gs://`, …) are kept as given.
pub fn validate_artifact_location(location: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidParameter(format!(
            "Invalid artifact_location '{}': {why}",
            location.chars().take(200).collect::<String>()
        )))
    };
    if location.len() > 1000 {
        return bad("it is longer than 1000 bytes");
    }
    if location.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if location.contains('#') || location.contains('?') {
        return bad("a fragment ('#') or query ('?') is not allowed");
    }
    // Percent-decoded twice, so neither `%2e%2e` nor `%252e%252e` hides a `..`.
    let decoded = pct_decode(&pct_decode(location));
    if decoded
        .split(['/', '\\'])
        .any(|seg| seg == ".." || seg == ".")
    {
        return bad("'..' or '.' path segments are not allowed");
    }
    let scheme = location.split_once(':').map(|(s, _)| s).filter(|s| {
        s.len() > 1
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    match scheme.map(str::to_ascii_lowercase).as_deref() {
        None | Some("file") => bad(
            "local paths are not accepted; use the server's proxy (mlflow-artifacts:/…, the \
             default) or an object store URI (s3://, gs://, wasbs://, …)",
        ),
        _ => Ok(()),
    }
}

/// `%XX` sequences decoded (invalid ones kept as they are).
fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses an experiment id (integer string).
pub fn parse_experiment_id(raw: &str) -> Result<i64> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            Error::InvalidParameter(format!(
                "Invalid value '{raw}' for parameter 'experiment_id': experiment ids are \
             non-negative integers."
            ))
        })
}

/// Checks a run id's format.
pub fn validate_run_id(raw: &str) -> Result<()> {
    let ok = !raw.is_empty()
        && raw.len() <= 256
        && raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "Invalid value \"{raw}\" for parameter 'run_id' supplied."
        )))
    }
}

/// Encodes an offset page token (base64 JSON, as MLflow does).
pub fn encode_page_token(offset: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

/// Decodes a page token into an offset; empty means the first page.
pub fn decode_page_token(token: Option<&str>) -> Result<i64> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    offset_of(&token_json(token)?, token)
}

/// The offset of an offset token's JSON.
fn offset_of(v: &serde_json::Value, token: &str) -> Result<i64> {
    v.get("offset")
        .and_then(serde_json::Value::as_i64)
        .filter(|o| *o >= 0)
        .ok_or_else(|| Error::InvalidParameter(format!("Invalid page token: {token}")))
}

/// The JSON inside a page token (base64, standard or URL-safe alphabet).
fn token_json(token: &str) -> Result<serde_json::Value> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token))
        .map_err(|_| {
            Error::InvalidParameter(format!(
                "Invalid page token, could not base64-decode: {token}"
            ))
        })?;
    serde_json::from_slice(&raw)
        .map_err(|_| Error::InvalidParameter(format!("Invalid page token: {token}")))
}

/// Encodes a runs-search page token: the sort-key values of the last run returned (keyset
/// paging; integers and text as JSON, doubles as their IEEE bits so they round-trip exactly).
pub fn encode_runs_page_token(after: &[crate::sql::SortValue]) -> String {
    use crate::sql::SortValue;
    let values: Vec<serde_json::Value> = after
        .iter()
        .map(|v| match v {
            SortValue::Null => serde_json::Value::Null,
            SortValue::Int(i) => serde_json::Value::from(*i),
            SortValue::Real(f) => serde_json::json!({ "f": f.to_bits() }),
            SortValue::Text(t) => serde_json::Value::from(t.as_str()),
        })
        .collect();
    base64::engine::general_purpose::STANDARD
        .encode(serde_json::json!({ "after": values }).to_string())
}

/// Decodes a runs-search page token: loopml's keyset form, or MLflow's `{"offset": N}` (tokens
/// a client kept from an older server still work); empty means the first page.
pub fn decode_runs_page_token(token: Option<&str>) -> Result<crate::sql::RunsPage> {
    use crate::sql::{RunsPage, SortValue};
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(RunsPage::Offset(0));
    };
    let bad = || Error::InvalidParameter(format!("Invalid page token: {token}"));
    let v = token_json(token)?;
    if v.get("offset").is_some() {
        return offset_of(&v, token).map(RunsPage::Offset);
    }
    let after = v
        .get("after")
        .and_then(serde_json::Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(bad)?;
    after
        .iter()
        .map(|x| match x {
            serde_json::Value::Null => Ok(SortValue::Null),
            serde_json::Value::String(t) => Ok(SortValue::Text(t.clone())),
            serde_json::Value::Number(n) => n.as_i64().map(SortValue::Int).ok_or_else(bad),
            serde_json::Value::Object(o) => o
                .get("f")
                .and_then(serde_json::Value::as_u64)
                .filter(|_| o.len() == 1)
                .map(|bits| SortValue::Real(f64::from_bits(bits)))
                .ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>>>()
        .map(RunsPage::After)
}

/// Encodes a metric-history page token: the last point returned, so the next page is an index
/// range after it (keyset paging; the value travels as its IEEE bits, exact for any float).
pub fn encode_history_token(after: &crate::sql::HistoryCursor) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{{\"after\": [{}, {}, {}, {}]}}",
        after.timestamp,
        after.step,
        after.value.to_bits() as i64,
        u8::from(after.is_nan)
    ))
}

/// Decodes a metric-history page token; empty means the first page.
pub fn decode_history_token(token: Option<&str>) -> Result<Option<crate::sql::HistoryCursor>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = || Error::InvalidParameter(format!("Invalid page token: {token}"));
    let v = token_json(token)?;
    let after = v
        .get("after")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(bad)?;
    let n: Vec<i64> = after.iter().filter_map(serde_json::Value::as_i64).collect();
    match n[..] {
        [timestamp, step, bits, nan @ (0 | 1)] if after.len() == 4 => {
            Ok(Some(crate::sql::HistoryCursor {
                timestamp,
                step,
                value: f64::from_bits(bits as u64),
                is_nan: nan == 1,
            }))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_locations_outside_the_store_are_refused() {
        for bad in [
            "file:///etc",
            "/etc",
            "file:/etc",
            "FILE:///etc",
            "../../etc",
            "relative/dir",
            "s3://bucket/../x",
            "s3://bucket/%2e%2e/x",
            "s3://bucket/%252e%252e/x",
            "s3://b/x\\..\\y",
            "mlflow-artifacts:/../../etc",
            "file:///tmp/x#frag",
            "s3://b/x?versionId=1",
            "mlflow-artifacts:/a\u{0}b",
            "c:\\windows",
        ] {
            assert!(validate_artifact_location(bad).is_err(), "{bad}");
        }
        for good in [
            "mlflow-artifacts:/custom/place",
            "s3://bucket/prefix",
            "gs://b/p",
            "wasbs://c@acct.blob.core.windows.net/p",
            "mlflow-artifacts://host:5000/7",
        ] {
            assert!(validate_artifact_location(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn experiment_names_refuse_control_characters_and_keep_other_unicode() {
        for bad in ["a\0b", "tab\there", "bell\u{7}", "\u{9b}csi"] {
            assert!(validate_experiment_name(bad).is_err(), "{bad:?}");
        }
        for good in ["é ☃ 𝄞", "right\u{202e}left", "e\u{301}", "名前/with slash"] {
            assert!(validate_experiment_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn history_tokens_round_trip_exactly() {
        for value in [
            0.0,
            -0.0,
            1.5,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            -1e-300,
        ] {
            let c = crate::sql::HistoryCursor {
                timestamp: 1_700_000_000_000,
                step: -3,
                value,
                is_nan: false,
            };
            let back = decode_history_token(Some(&encode_history_token(&c)))
                .unwrap()
                .unwrap();
            assert_eq!(back.value.to_bits(), value.to_bits());
            assert_eq!(
                (back.timestamp, back.step, back.is_nan),
                (c.timestamp, c.step, false)
            );
        }
        assert_eq!(decode_history_token(Some("")).unwrap(), None);
        for bad in ["!!", "eyJvZmZzZXQiOiAzfQ==", "eyJhZnRlciI6IFsxLCAyXX0="] {
            let e = decode_history_token(Some(bad)).unwrap_err();
            assert!(e.to_string().contains("Invalid page token"), "{e}");
        }
    }

    #[test]
    fn keys() {
        for ok in ["m", "a/b", "loss v2", "x:y", "über_metric", "a.b-c"] {
            validate_key(ok, "key").unwrap();
        }
        for bad in [
            "bad|name",
            "../x",
            "/x",
            "a//b",
            "a/./b",
            "a/",
            "",
            &"k".repeat(251),
        ] {
            assert!(validate_key(bad, "key").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate("ééé".into(), 2), "éé");
        assert_eq!(truncate("abc".into(), 6000), "abc");
    }

    #[test]
    fn page_tokens_round_trip() {
        assert_eq!(decode_page_token(Some(&encode_page_token(42))).unwrap(), 42);
        assert_eq!(decode_page_token(None).unwrap(), 0);
        assert!(decode_page_token(Some("garbage!!")).is_err());
    }
}
