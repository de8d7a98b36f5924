//! MLflow's registry input rules: model names, version numbers, aliases, tags and limits.

use crate::error::{Error, Result};

/// Maximum registry tag key length.
pub const MAX_TAG_KEY_LEN: usize = 250;
/// Maximum registry tag value length.
pub const MAX_TAG_VALUE_LEN: usize = 100_000;
/// Maximum alias length.
pub const MAX_ALIAS_LEN: usize = 255;
/// Maximum `max_results` of a registered-model search.
pub const MAX_MODELS_SEARCH: i64 = 1000;
/// Maximum `max_results` of a model-version search.
pub const MAX_VERSIONS_SEARCH: i64 = 200_000;

/// Checks a registered model name: non-empty, no `/` or `:`, no path tricks.
pub fn validate_model_name(name: &str, param: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::missing(param));
    }
    if name.contains('/') || name.contains(':') {
        return Err(Error::InvalidParameter(format!(
            "Invalid model name '{name}'. Names cannot contain '/' or ':'."
        )));
    }
    if name == "." || name == ".." || name.contains('\\') || name.contains('\0') {
        return Err(Error::InvalidParameter(format!(
            "Invalid value \"{name}\" for parameter '{param}' supplied: Names cannot resolve to a \
             different path when normalized."
        )));
    }
    Ok(())
}

/// Parses a version number given as text.
pub fn parse_version(raw: &str) -> Result<i64> {
    raw.trim().parse::<i64>().map_err(|_| {
        Error::InvalidParameter(format!(
            "Parameter 'version' must be an integer, got '{raw}'."
        ))
    })
}

/// Checks an alias name: `^[\w\-]*$`, at most 255 characters, not empty.
pub fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() {
        return Err(Error::InvalidParameter(
            "Registered model alias name cannot be empty.".into(),
        ));
    }
    if !alias
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::InvalidParameter(format!(
            "Invalid alias name: '{alias}'. Alias names may only contain alphanumerics, \
             underscores (_), and dashes (-)."
        )));
    }
    if alias.chars().count() > MAX_ALIAS_LEN {
        return Err(Error::InvalidParameter(format!(
            "Registered model alias name exceeds the maximum length of {MAX_ALIAS_LEN} \
             characters."
        )));
    }
    Ok(())
}

/// Rejects the reserved aliases `latest` (any case) and `v<digits>`.
pub fn validate_alias_not_reserved(alias: &str) -> Result<()> {
    if alias.eq_ignore_ascii_case("latest") {
        return Err(Error::InvalidParameter(
            "'latest' alias name (case insensitive) is reserved.".into(),
        ));
    }
    let mut chars = alias.chars();
    if matches!(chars.next(), Some('v' | 'V'))
        && alias.len() > 1
        && chars.all(|c| c.is_ascii_digit())
    {
        return Err(Error::InvalidParameter(format!(
            "Version alias name '{alias}' is reserved."
        )));
    }
    Ok(())
}

/// Checks a registry tag (key rules as for run tags; value at most 100,000 characters).
pub fn validate_tag(key: &str, value: &str) -> Result<()> {
    loopml_tracking::validation::validate_key(key, "key")?;
    if key.chars().count() > MAX_TAG_KEY_LEN {
        return Err(Error::InvalidParameter(format!(
            "'key' exceeds the maximum length of {MAX_TAG_KEY_LEN} characters"
        )));
    }
    if value.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(Error::InvalidParameter(format!(
            "'value' exceeds the maximum length of {MAX_TAG_VALUE_LEN} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert!(validate_model_name("churn", "name").is_ok());
        assert!(validate_model_name("churn model-1.2", "name").is_ok());
        assert!(validate_model_name("", "name").is_err());
        assert!(validate_model_name("  ", "name").is_err());
        assert!(validate_model_name("a/b", "name").is_err());
        assert!(validate_model_name("a:b", "name").is_err());
        assert!(validate_model_name("..", "name").is_err());
    }

    #[test]
    fn aliases() {
        assert!(validate_alias("champion").is_ok());
        assert!(validate_alias("ch-amp_1").is_ok());
        assert!(validate_alias("").is_err());
        assert!(validate_alias("a b").is_err());
        assert!(validate_alias("a.b").is_err());
        assert!(validate_alias(&"a".repeat(256)).is_err());
        assert!(validate_alias_not_reserved("latest").is_err());
        assert!(validate_alias_not_reserved("LaTeSt").is_err());
        assert!(validate_alias_not_reserved("v1").is_err());
        assert!(validate_alias_not_reserved("V12").is_err());
        assert!(validate_alias_not_reserved("v").is_ok());
        assert!(validate_alias_not_reserved("v1a").is_ok());
        assert!(validate_alias_not_reserved("champion").is_ok());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("3").unwrap(), 3);
        assert!(parse_version("abc").is_err());
        assert!(parse_version("").is_err());
    }
}
