//! Reading the flat JSON lines the chaos processes print, without a JSON
//! dependency (xtask has none on purpose): a top-level field's raw text.

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
