//! Matching text against a strftime format the way Python's `datetime.strptime` does for the
//! common codes (`%Y %y %m %d %H %I %M %S %f %p %j %b %B %a %A %z %Z %%`), including checking that
//! the day exists in the month.

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(char),
    Space,
    Code(char),
}

/// A parsed strftime format.
#[derive(Debug, Clone, PartialEq)]
pub struct Format(Vec<Piece>);

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Format {
    /// Parses a format; unknown `%` codes are errors.
    pub fn parse(fmt: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('%') => out.push(Piece::Literal('%')),
                    Some(
                        code @ ('Y' | 'y' | 'm' | 'd' | 'H' | 'I' | 'M' | 'S' | 'f' | 'p' | 'j'
                        | 'b' | 'B' | 'a' | 'A' | 'z' | 'Z'),
                    ) => out.push(Piece::Code(code)),
                    Some(other) => return Err(format!("unsupported strftime code %{other}")),
                    None => return Err("strftime format ends with a lone %".into()),
                }
            } else if c.is_whitespace() {
                out.push(Piece::Space);
            } else {
                out.push(Piece::Literal(c));
            }
        }
        Ok(Self(out))
    }

    /// Whether the whole of `s` matches the format and names a real date/time.
    pub fn matches(&self, s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        let (mut year, mut month, mut day) = (None, None, None);
        for p in &self.0 {
            match p {
                Piece::Literal(c) => {
                    let mut buf = [0u8; 4];
                    let lit = c.encode_utf8(&mut buf).as_bytes();
                    if !b[i..].starts_with(lit) {
                        return false;
                    }
                    i += lit.len();
                }
                Piece::Space => {
                    while i < b.len() && b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                }
                Piece::Code(code) => {
                    let r = match code {
                        'Y' => digits(b, &mut i, 4, 4).inspect(|&v| year = Some(v)),
                        'y' => digits(b, &mut i, 2, 2).inspect(|&v| year = Some(2000 + v)),
                        'm' => digits(b, &mut i, 1, 2)
                            .filter(|v| (1..=12).contains(v))
                            .inspect(|&v| month = Some(v)),
                        'd' => digits(b, &mut i, 1, 2)
                            .filter(|v| (1..=31).contains(v))
                            .inspect(|&v| day = Some(v)),
                        'H' => digits(b, &mut i, 1, 2).filter(|v| *v <= 23),
                        'I' => digits(b, &mut i, 1, 2).filter(|v| (1..=12).contains(v)),
                        'M' => digits(b, &mut i, 1, 2).filter(|v| *v <= 59),
                        'S' => digits(b, &mut i, 1, 2).filter(|v| *v <= 61),
                        'f' => digits(b, &mut i, 1, 6),
                        'j' => digits(b, &mut i, 1, 3).filter(|v| (1..=366).contains(v)),
                        'p' => word(b, &mut i, &["am", "pm"], false),
                        'b' => word(b, &mut i, &MONTHS, true).inspect(|&v| month = Some(v + 1)),
                        'B' => word(b, &mut i, &MONTHS, false).inspect(|&v| month = Some(v + 1)),
                        'a' => word(b, &mut i, &DAYS, true),
                        'A' => word(b, &mut i, &DAYS, false),
                        'z' => offset(b, &mut i),
                        'Z' => {
                            let start = i;
                            while i < b.len() && b[i].is_ascii_alphabetic() {
                                i += 1;
                            }
                            (i > start).then_some(0)
                        }
                        _ => None,
                    };
                    if r.is_none() {
                        return false;
                    }
                }
            }
        }
        if i != b.len() {
            return false;
        }
        match (month, day) {
            (Some(m), Some(d)) => d <= days_in_month(year.unwrap_or(2000), m),
            _ => true,
        }
    }
}

fn digits(b: &[u8], i: &mut usize, min: usize, max: usize) -> Option<u32> {
    let start = *i;
    let mut v: u32 = 0;
    while *i < b.len() && *i - start < max && b[*i].is_ascii_digit() {
        v = v * 10 + u32::from(b[*i] - b'0');
        *i += 1;
    }
    (*i - start >= min).then_some(v)
}

/// Matches one of `words` (case-insensitive), full or, when `abbrev`, its first three letters.
fn word(b: &[u8], i: &mut usize, words: &[&str], abbrev: bool) -> Option<u32> {
    for (k, w) in words.iter().enumerate() {
        let w = if abbrev { &w[..3] } else { w };
        let end = *i + w.len();
        if end <= b.len() && b[*i..end].eq_ignore_ascii_case(w.as_bytes()) {
            *i = end;
            return u32::try_from(k).ok();
        }
    }
    None
}

fn offset(b: &[u8], i: &mut usize) -> Option<u32> {
    if *i < b.len() && b[*i] == b'Z' {
        *i += 1;
        return Some(0);
    }
    if *i >= b.len() || !(b[*i] == b'+' || b[*i] == b'-') {
        return None;
    }
    *i += 1;
    let h = digits(b, i, 2, 2)?;
    if *i < b.len() && b[*i] == b':' {
        *i += 1;
    }
    let m = digits(b, i, 2, 2)?;
    (h <= 23 && m <= 59).then_some(h * 60 + m)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::Format;

    #[test]
    fn dates_and_times() {
        let f = Format::parse("%Y-%m-%d").unwrap();
        assert!(f.matches("2024-02-29"));
        assert!(!f.matches("2023-02-29"));
        assert!(!f.matches("2024-13-01"));
        assert!(!f.matches("2024-01-01x"));
        assert!(!f.matches("24-01-01"));
        let f = Format::parse("%d %b %Y %I:%M %p").unwrap();
        assert!(f.matches("05 Mar 2021 07:15 PM"));
        assert!(!f.matches("05 Mar 2021 13:15 PM"));
        assert!(Format::parse("%Q").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(fmt in "\\PC{0,12}", text in "\\PC{0,16}") {
            if let Ok(f) = Format::parse(&fmt) {
                let _ = f.matches(&text);
            }
        }

        #[test]
        fn real_dates_match_and_day_32_does_not(y in 1000u32..3000, m in 1u32..13, d in 1u32..29, h in 0u32..24) {
            let f = Format::parse("%Y-%m-%d %H:%M").unwrap();
            let s = format!("{y:04}-{m:02}-{d:02} {h:02}:07");
            proptest::prop_assert!(f.matches(&s));
            let bad = format!("{y:04}-{m:02}-32 {h:02}:07");
            proptest::prop_assert!(!f.matches(&bad));
        }
    }
}
