//! Placeholder rewriting: domain SQL is written once with SQLite's `?` / `?N` placeholders;
//! PostgreSQL wants `$N`. The rewrite skips string literals, quoted identifiers and comments,
//! and numbers a bare `?` the way SQLite does (one more than the largest number so far).

use std::borrow::Cow;

/// Rewrites `?` and `?N` placeholders into PostgreSQL's `$N`, leaving quoted text alone.
pub fn to_dollar_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"') => {
                // A quoted literal or identifier; a doubled quote is an escaped quote.
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'?' => {
                out.push_str(&sql[copied..i]);
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let n = if end > start {
                    sql[start..end].parse::<u32>().unwrap_or(u32::MAX)
                } else {
                    largest + 1
                };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
                i = end;
                copied = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::to_dollar_placeholders as rw;

    #[test]
    fn numbers_bare_and_explicit_placeholders_as_sqlite_does() {
        assert_eq!(rw("SELECT 1"), "SELECT 1");
        assert_eq!(
            rw("INSERT INTO t VALUES (?, ?, ?)"),
            "INSERT INTO t VALUES ($1, $2, $3)"
        );
        assert_eq!(
            rw("WHERE a = ?1 AND b = ?2 OR c = ?1"),
            "WHERE a = $1 AND b = $2 OR c = $1"
        );
        // A bare `?` after `?3` is number 4, as in SQLite.
        assert_eq!(rw("?3, ?"), "$3, $4");
        assert_eq!(rw("LIMIT ?"), "LIMIT $1");
    }

    #[test]
    fn leaves_quoted_text_and_comments_alone() {
        assert_eq!(
            rw("SELECT '?', \"a?b\", 'it''s ?' FROM t WHERE x = ?"),
            "SELECT '?', \"a?b\", 'it''s ?' FROM t WHERE x = $1"
        );
        assert_eq!(rw("-- what?\nSELECT ?"), "-- what?\nSELECT $1");
        assert_eq!(rw("/* ? */ SELECT ?"), "/* ? */ SELECT $1");
        // An unterminated literal does not panic.
        assert_eq!(rw("SELECT 'abc ?"), "SELECT 'abc ?");
    }
}
