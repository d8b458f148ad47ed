//! Reading the flat JSON lines node processes print (`chaos`, `testnet`),
//! without a JSON dependency: a top-level field's raw text.

/// The raw text of field `key` in the one-line JSON object `line`: a string
/// without its quotes, a number, `true`/`false`, or an array/object with
/// its brackets. `None` when the field is missing.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let start = line.find(&pattern)? + pattern.len();
    let rest = line.get(start..)?;
    let first = rest.chars().next()?;
    match first {
        '"' => {
            let body = rest.get(1..)?;
            let mut escaped = false;
            for (i, c) in body.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => return body.get(..i),
                    _ => escaped = false,
                }
            }
            None
        }
        '[' | '{' => {
            let close = if first == '[' { ']' } else { '}' };
            let mut depth = 0usize;
            let mut in_string = false;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                if in_string {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => in_string = false,
                        _ => escaped = false,
                    }
                    continue;
                }
                match c {
                    '"' => in_string = true,
                    c if c == first => depth += 1,
                    c if c == close => {
                        depth -= 1;
                        if depth == 0 {
                            return rest.get(..=i);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        _ => {
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest.get(..end)
        }
    }
}

/// Field `key` as a number (`0.0` when missing or not a number).
pub fn num(line: &str, key: &str) -> f64 {
    field(line, key).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Field `key` as a whole number, exactly (`num` goes through `f64`, which
/// rounds above 2^53: gossip sequence numbers are random 63-bit numbers).
pub fn uint(line: &str, key: &str) -> Option<u64> {
    field(line, key)?.parse().ok()
}

/// The numbers of array field `key` (empty when missing).
pub fn nums(line: &str, key: &str) -> Vec<f64> {
    field(line, key)
        .and_then(|v| v.strip_prefix('[')?.strip_suffix(']'))
        .map(|inner| {
            inner
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// String field `key` with its escapes resolved (`None` when missing).
pub fn text(line: &str, key: &str) -> Option<String> {
    let raw = field(line, key)?;
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// `text` as a JSON string, quotes included.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_reads_back() {
        let original = "a \"b\" \\ c\n";
        let line = format!("{{\"k\":{}}}", quote(original));
        assert_eq!(line, r#"{"k":"a \"b\" \\ c\u000a"}"#);
        assert_eq!(field(&line, "k"), Some(r#"a \"b\" \\ c\u000a"#));
        assert_eq!(text(&line, "k").as_deref(), Some(original));
        assert_eq!(text(r#"{"k":"x\ty"}"#, "k").as_deref(), Some("x\ty"));
    }

    #[test]
    fn reads_strings_numbers_arrays_and_objects() {
        let line = r#"{"event":"sample","open":true,"reasons":{"a \"b\", c":2},"rtts_ms":[1.5,2],"secs":3.25}"#;
        assert_eq!(field(line, "event"), Some("sample"));
        assert_eq!(field(line, "open"), Some("true"));
        assert_eq!(field(line, "reasons"), Some(r#"{"a \"b\", c":2}"#));
        assert_eq!(nums(line, "rtts_ms"), [1.5, 2.0]);
        assert_eq!(num(line, "secs"), 3.25);
        assert_eq!(field(line, "missing"), None);
        assert_eq!(num(line, "missing"), 0.0);
        let big = r#"{"seq":9017872223039431051,"n":-1}"#;
        assert_eq!(uint(big, "seq"), Some(9_017_872_223_039_431_051));
        assert_eq!(uint(big, "n"), None);
    }
}
