//! MLflow's search filter and order-by grammar: `clause AND clause …`, where a clause is
//! `prefix.key OP value` or `prefix.key IS [NOT] NULL`. Parsing is independent of what is
//! searched; each search checks which entities and operators it allows.

use crate::error::{Error, Result};

/// What a clause compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// `metrics.<key>`.
    Metric(String),
    /// `params.<key>`.
    Param(String),
    /// `tags.<key>`.
    Tag(String),
    /// `attributes.<name>` or a bare name.
    Attribute(String),
    /// `datasets.<name|digest|context>`.
    Dataset(String),
}

impl Entity {
    /// How the entity is written in error messages.
    pub fn describe(&self) -> String {
        match self {
            Entity::Metric(k) => format!("metrics.{k}"),
            Entity::Param(k) => format!("params.{k}"),
            Entity::Tag(k) => format!("tags.{k}"),
            Entity::Attribute(k) => format!("attributes.{k}"),
            Entity::Dataset(k) => format!("datasets.{k}"),
        }
    }
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `LIKE` (case-sensitive)
    Like,
    /// `ILIKE` (case-insensitive)
    ILike,
    /// `IN (…)`
    In,
    /// `NOT IN (…)`
    NotIn,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    IsNotNull,
}

impl Op {
    /// SQL operator for simple binary comparisons.
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like | Op::ILike => "LIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
    /// True for `= != > >= < <=`.
    pub fn is_numeric(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le)
    }
    /// True for `= != LIKE ILIKE`.
    pub fn is_string(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Like | Op::ILike)
    }
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string.
    Str(String),
    /// A number (the source text is kept for exact integer comparisons).
    Num(f64, String),
    /// A parenthesised list of strings.
    List(Vec<String>),
    /// Nothing (for IS NULL / IS NOT NULL).
    None,
}

/// One `entity op value` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// Left side.
    pub entity: Entity,
    /// Operator.
    pub op: Op,
    /// Right side.
    pub value: Literal,
}

/// One `order_by` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    /// What to sort by.
    pub entity: Entity,
    /// Ascending?
    pub ascending: bool,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidParameter(msg.into())
}

struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }
    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }
    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.src.len()
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    /// Consumes a keyword (case-insensitive) followed by a non-word char.
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        // `get`: a multi-byte character may straddle the keyword's length (found by fuzzing).
        if rest
            .get(..kw.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(kw))
        {
            let after = rest[kw.len()..].chars().next();
            if after.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                self.pos += kw.len();
                return true;
            }
        }
        false
    }
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += end;
        &rest[..end]
    }
    fn quoted(&mut self) -> Result<String> {
        let quote = self
            .peek()
            .ok_or_else(|| invalid("unexpected end of filter"))?;
        let body_start = self.pos + quote.len_utf8();
        let rest = &self.src[body_start..];
        let mut out = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                // A doubled quote inside is an escaped quote (SQL style).
                if chars.peek().is_some_and(|(_, n)| *n == quote) {
                    out.push(quote);
                    chars.next();
                    continue;
                }
                self.pos = body_start + i + quote.len_utf8();
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            out.push(c);
        }
        Err(invalid(format!(
            "Invalid filter: unterminated quoted string starting at {}",
            &self.src[self.pos..]
        )))
    }
}

fn make_entity(prefix: Option<&str>, key: String, src: &str) -> Result<Entity> {
    let Some(prefix) = prefix else {
        return Ok(Entity::Attribute(key));
    };
    let p = prefix.to_ascii_lowercase();
    Ok(match p.as_str() {
        "metric" | "metrics" => Entity::Metric(key),
        "param" | "params" | "parameter" | "parameters" => Entity::Param(key),
        "tag" | "tags" => Entity::Tag(key),
        "attribute" | "attributes" | "attr" | "run" => Entity::Attribute(key),
        "dataset" | "datasets" => Entity::Dataset(key),
        _ => {
            return Err(invalid(format!(
                "Invalid entity type '{prefix}' in '{src}'. Valid values are ['metric', \
                 'parameter', 'tag', 'attribute', 'dataset']"
            )));
        }
    })
}

/// An identifier as `(prefix, key)`: `key`, `prefix.key`, `prefix.\`quoted key\`` or a fully
/// quoted name.
fn parse_name(s: &mut Scanner<'_>) -> Result<(Option<String>, String)> {
    s.skip_ws();
    let src = s.src;
    match s.peek() {
        Some('`') | Some('"') => {
            // A fully quoted identifier: an attribute name such as `Run name`.
            Ok((None, s.quoted()?))
        }
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let w = s.word();
            if let Some(prefix) = w.strip_suffix('.') {
                // prefix.`quoted key`
                match s.peek() {
                    Some('`') | Some('"') | Some('\'') => {
                        let key = s.quoted()?;
                        Ok((Some(prefix.to_string()), key))
                    }
                    _ => Err(invalid(format!(
                        "Invalid identifier '{w}' in filter '{src}'"
                    ))),
                }
            } else if let Some((prefix, key)) = w.split_once('.') {
                Ok((Some(prefix.to_string()), key.to_string()))
            } else {
                Ok((None, w.to_string()))
            }
        }
        _ => Err(invalid(format!(
            "Invalid filter '{src}': expected an identifier at '{}'",
            s.rest()
        ))),
    }
}

fn parse_op(s: &mut Scanner<'_>) -> Result<Op> {
    s.skip_ws();
    for (sym, op) in [
        ("!=", Op::Ne),
        ("<>", Op::Ne),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ] {
        if s.rest().starts_with(sym) {
            s.pos += sym.len();
            return Ok(op);
        }
    }
    if s.keyword("LIKE") {
        return Ok(Op::Like);
    }
    if s.keyword("ILIKE") {
        return Ok(Op::ILike);
    }
    if s.keyword("IN") {
        return Ok(Op::In);
    }
    if s.keyword("NOT") {
        if s.keyword("IN") {
            return Ok(Op::NotIn);
        }
        return Err(invalid(format!(
            "Invalid clause(s) in filter string: 'NOT' in '{}'",
            s.src
        )));
    }
    if s.keyword("IS") {
        if s.keyword("NOT") {
            if s.keyword("NULL") {
                return Ok(Op::IsNotNull);
            }
        } else if s.keyword("NULL") {
            return Ok(Op::IsNull);
        }
        return Err(invalid(format!(
            "Invalid filter '{}': expected IS [NOT] NULL",
            s.src
        )));
    }
    Err(invalid(format!(
        "Invalid comparator in filter '{}' at '{}'. Valid comparators are =, !=, >, >=, <, <=, \
         LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL",
        s.src,
        s.rest()
    )))
}

fn parse_value(s: &mut Scanner<'_>, op: Op) -> Result<Literal> {
    s.skip_ws();
    if matches!(op, Op::IsNull | Op::IsNotNull) {
        return Ok(Literal::None);
    }
    match s.peek() {
        Some('\'') | Some('"') => Ok(Literal::Str(s.quoted()?)),
        Some('(') => {
            if !matches!(op, Op::In | Op::NotIn) {
                return Err(invalid(format!(
                    "Invalid clause(s) in filter string: parentheses are only allowed after \
                     IN / NOT IN in '{}'",
                    s.src
                )));
            }
            s.pos += 1;
            let mut items = Vec::new();
            loop {
                s.skip_ws();
                match s.peek() {
                    Some('\'') | Some('"') => items.push(s.quoted()?),
                    Some(')') if items.is_empty() => {
                        return Err(invalid("Invalid filter: IN requires a non-empty list"));
                    }
                    _ => {
                        return Err(invalid(format!(
                            "Invalid filter '{}': IN lists must contain quoted strings",
                            s.src
                        )));
                    }
                }
                s.skip_ws();
                match s.peek() {
                    Some(',') => s.pos += 1,
                    Some(')') => {
                        s.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(invalid(format!(
                            "Invalid filter '{}': unclosed list",
                            s.src
                        )));
                    }
                }
            }
            Ok(Literal::List(items))
        }
        Some(c) if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => {
            let rest = s.rest();
            let end = rest
                .char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_digit()
                        || matches!(c, '.' | 'e' | 'E')
                        || (matches!(c, '-' | '+')
                            && (*i == 0 || matches!(rest.as_bytes()[i - 1], b'e' | b'E'))))
                })
                .map_or(rest.len(), |(i, _)| i);
            let text = &rest[..end];
            let num: f64 = text.parse().map_err(|_| {
                invalid(format!(
                    "Invalid filter '{}': '{text}' is not a number",
                    s.src
                ))
            })?;
            s.pos += end;
            Ok(Literal::Num(num, text.to_string()))
        }
        _ => Err(invalid(format!(
            "Invalid filter '{}': expected a value at '{}'",
            s.src,
            s.rest()
        ))),
    }
}

/// One clause with its identifier not yet interpreted: `prefix.key op value`, for searches
/// whose prefixes are their own (traces: `tag`, `request_metadata`, `span`, `feedback`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct RawClause {
    /// The part before the first dot, if any (as written).
    pub prefix: Option<String>,
    /// The rest.
    pub key: String,
    /// Operator.
    pub op: Op,
    /// Right side.
    pub value: Literal,
}

/// Parses a filter string with MLflow's grammar, leaving the prefixes to the caller.
pub fn parse_raw_filter(filter: &str) -> Result<Vec<RawClause>> {
    let mut s = Scanner::new(filter);
    let mut clauses = Vec::new();
    if s.at_end() {
        return Ok(clauses);
    }
    loop {
        s.skip_ws();
        if s.peek() == Some('(') {
            return Err(invalid(format!(
                "Invalid clause(s) in filter string: parentheses are not supported in '{filter}'"
            )));
        }
        let (prefix, key) = parse_name(&mut s)?;
        let op = parse_op(&mut s)?;
        let value = parse_value(&mut s, op)?;
        clauses.push(RawClause {
            prefix,
            key,
            op,
            value,
        });
        if s.at_end() {
            break;
        }
        if s.keyword("AND") {
            continue;
        }
        if s.keyword("OR") {
            return Err(invalid(format!(
                "Invalid clause(s) in filter string: 'OR'. Only AND is supported in '{filter}'"
            )));
        }
        return Err(invalid(format!(
            "Invalid filter '{filter}': expected AND at '{}'",
            s.rest()
        )));
    }
    Ok(clauses)
}

/// Parses an order-by entry (`name [ASC|DESC]`) leaving the prefix to the caller:
/// `(prefix, key, ascending)`.
pub fn parse_raw_order_by(raw: &str) -> Result<(Option<String>, String, bool)> {
    let mut s = Scanner::new(raw);
    if s.at_end() {
        return Err(invalid("Invalid order_by clause ''."));
    }
    let (prefix, key) = parse_name(&mut s)?;
    let ascending = if s.keyword("DESC") {
        false
    } else {
        s.keyword("ASC");
        true
    };
    if !s.at_end() {
        return Err(invalid(format!(
            "Invalid order_by clause '{raw}'. Could not be parsed."
        )));
    }
    Ok((prefix, key, ascending))
}

/// Parses a filter string into its clauses (empty filter → no clauses).
pub fn parse_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw_filter(filter)?
        .into_iter()
        .map(|r| {
            Ok(Clause {
                entity: make_entity(r.prefix.as_deref(), r.key, filter)?,
                op: r.op,
                value: r.value,
            })
        })
        .collect()
}

/// Parses one `order_by` entry: `<identifier> [ASC|DESC]`.
pub fn parse_order_by(raw: &str) -> Result<OrderBy> {
    let (prefix, key, ascending) = parse_raw_order_by(raw)?;
    Ok(OrderBy {
        entity: make_entity(prefix.as_deref(), key, raw)?,
        ascending,
    })
}

impl Clause {
    /// The value as a string, or an error naming the clause.
    pub fn string_value(&self) -> Result<&str> {
        match &self.value {
            Literal::Str(v) => Ok(v),
            _ => Err(invalid(format!(
                "Expected a quoted string value for {} (e.g. 'my-value').",
                self.entity.describe()
            ))),
        }
    }
    /// The value as a number, or an error naming the clause.
    pub fn numeric_value(&self) -> Result<f64> {
        match &self.value {
            Literal::Num(v, _) => Ok(*v),
            Literal::Str(v) if matches!(self.entity, Entity::Attribute(_)) => {
                v.parse().map_err(|_| {
                    invalid(format!(
                        "Expected numeric value type for {}",
                        self.entity.describe()
                    ))
                })
            }
            _ => Err(invalid(format!(
                "Expected numeric value type for {}. Found {}",
                self.entity.describe(),
                match &self.value {
                    Literal::Str(v) => format!("'{v}'"),
                    other => format!("{other:?}"),
                }
            ))),
        }
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mlflow_filters() {
        let c = parse_filter(
            "metrics.m > 0.5 AND params.p = '1' and tags.`my tag` LIKE 'xy%' AND \
             attributes.status = \"FINISHED\" AND attributes.run_id IN ('a', 'b') AND \
             tags.nothere IS NULL AND metrics.\"a b\" <= -1e3 AND status != 'X'",
        )
        .unwrap();
        assert_eq!(c.len(), 8);
        assert_eq!(c[0].entity, Entity::Metric("m".into()));
        assert_eq!(c[0].op, Op::Gt);
        assert_eq!(c[1].value, Literal::Str("1".into()));
        assert_eq!(c[2].entity, Entity::Tag("my tag".into()));
        assert_eq!(c[2].op, Op::Like);
        assert_eq!(c[4].value, Literal::List(vec!["a".into(), "b".into()]));
        assert_eq!(c[5].op, Op::IsNull);
        assert_eq!(c[6].entity, Entity::Metric("a b".into()));
        assert_eq!(c[6].value, Literal::Num(-1000.0, "-1e3".into()));
        assert_eq!(c[7].entity, Entity::Attribute("status".into()));
        assert_eq!(c[7].op, Op::Ne);
    }

    #[test]
    fn rejects_or_parens_and_garbage() {
        for bad in [
            "metrics.m > 1 OR metrics.m < 0",
            "(metrics.m > 1)",
            "foo.bar = 1",
            "metrics.m >",
            "params.p = 'unterminated",
            "metrics.m 5",
            "params.p = '1' params.q = '2'",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_filter("  ").unwrap().is_empty());
    }

    #[test]
    fn order_by() {
        let o = parse_order_by("metrics.m DESC").unwrap();
        assert_eq!(o.entity, Entity::Metric("m".into()));
        assert!(!o.ascending);
        assert!(parse_order_by("start_time").unwrap().ascending);
        assert!(parse_order_by("metrics.m sideways").is_err());
    }
}
