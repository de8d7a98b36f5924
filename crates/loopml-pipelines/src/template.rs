//! `${params.NAME}` and `${steps.STEP.KEY}` references inside string fields. Any other `${…}`
//! (a shell variable such as `${HOME}`) is left as it is.

/// One piece of a templated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `${params.NAME}`.
    Param(String),
    /// `${steps.STEP.KEY}`: an output of an upstream step.
    Output {
        /// The step.
        step: String,
        /// The output's key.
        key: String,
    },
}

/// Splits `s` into literal text and references; errors describe a malformed reference.
pub fn parse(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let ours = after.starts_with("params.") || after.starts_with("steps.");
        if !ours {
            text.push_str(&rest[..at + 2]);
            rest = after;
            continue;
        }
        let Some(end) = after.find('}') else {
            return Err(format!(
                "`${{{}` is not closed with `}}`",
                first_word(after)
            ));
        };
        text.push_str(&rest[..at]);
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        let inner = &after[..end];
        pieces.push(reference(inner)?);
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or(s)
}

fn reference(inner: &str) -> Result<Piece, String> {
    if let Some(name) = inner.strip_prefix("params.") {
        if !is_param_name(name) {
            return Err(format!(
                "`${{{inner}}}`: a param name is letters, digits and `_`"
            ));
        }
        return Ok(Piece::Param(name.to_string()));
    }
    let body = inner.strip_prefix("steps.").unwrap_or(inner);
    // Step names may contain dots, output keys may not: the key is after the last dot.
    match body.rsplit_once('.') {
        Some((step, key)) if !step.is_empty() && is_output_key(key) => Ok(Piece::Output {
            step: step.to_string(),
            key: key.to_string(),
        }),
        _ => Err(format!(
            "`${{{inner}}}`: expected `${{steps.STEP.KEY}}` (KEY is letters, digits, `_` and `-`)"
        )),
    }
}

/// Whether `s` is a valid param name (`[A-Za-z0-9_]+`).
pub fn is_param_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a valid output key (`[A-Za-z0-9_-]+`).
pub fn is_output_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `s` is a valid pipeline or step name (`[A-Za-z0-9._-]+`).
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Renders `s`, replacing each reference with what `lookup` gives for it; the error names the
/// first reference that has no value.
pub fn render(s: &str, lookup: &dyn Fn(&Piece) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    for piece in parse(s)? {
        match &piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Param(name) => {
                out.push_str(&lookup(&piece).ok_or_else(|| format!("unknown param `{name}`"))?)
            }
            Piece::Output { step, key } => out.push_str(
                &lookup(&piece)
                    .ok_or_else(|| format!("step `{step}` published no output `{key}`"))?,
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_params_outputs_and_leaves_shell_variables() {
        let p =
            parse("python x.py --n ${params.rows} --in ${steps.gen.v1.path} ${HOME} $X").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Text("python x.py --n ".into()),
                Piece::Param("rows".into()),
                Piece::Text(" --in ".into()),
                Piece::Output {
                    step: "gen.v1".into(),
                    key: "path".into()
                },
                Piece::Text(" ${HOME} $X".into()),
            ]
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(parse("${params.rows").unwrap_err().contains("not closed"));
        assert!(parse("${params.}").is_err());
        assert!(parse("${params.a-b}").is_err());
        assert!(parse("${steps.a}").unwrap_err().contains("steps.STEP.KEY"));
        assert!(parse("${steps..k}").is_err());
        assert!(parse("${steps.a.b c}").is_err());
    }

    #[test]
    fn renders_and_names_the_missing_value() {
        let lookup = |p: &Piece| match p {
            Piece::Param(n) if n == "rows" => Some("5000".to_string()),
            Piece::Output { step, key } if step == "a" && key == "x" => Some("42".into()),
            _ => None,
        };
        assert_eq!(
            render("n=${params.rows} x=${steps.a.x}", &lookup).unwrap(),
            "n=5000 x=42"
        );
        assert_eq!(
            render("${params.nope}", &lookup).unwrap_err(),
            "unknown param `nope`"
        );
        assert_eq!(
            render("${steps.a.y}", &lookup).unwrap_err(),
            "step `a` published no output `y`"
        );
    }

    #[test]
    fn names() {
        assert!(is_name("churn-retrain_v1.2"));
        assert!(!is_name("a b"));
        assert!(!is_name(""));
        assert!(!is_name("a/b"));
        assert!(is_param_name("rows_2"));
        assert!(!is_param_name("rows-2"));
        assert!(is_output_key("run_id"));
        assert!(!is_output_key("a.b"));
    }
}
