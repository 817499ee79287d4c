//! A small literal parser for JSON, Python literals and the broken JSON models write.
//!
//! One recursive-descent parser serves three dialects: strict JSON (what renderers emit),
//! Python literals (what the study's `eval`/`ast.literal_eval` accept) and a lenient dialect
//! that repairs trailing commas, single quotes, unquoted keys and values, and unclosed
//! strings, arrays and objects at the end of the input. Recursion depth is bounded, so
//! hostile input cannot overflow the stack.

/// A parsed literal. Object keys keep their order; duplicates are kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Object(Vec<(String, Value)>),
    Array(Vec<Value>),
    Str(String),
    /// A number, as written.
    Number(String),
    Bool(bool),
    Null,
}

impl Value {
    /// The first value under `key`, if this is an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Text of a string or number (numbers as written), as Python's `str()` would give for
    /// the common cases.
    pub(crate) fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) | Value::Number(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Which syntax is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// RFC 8259 JSON.
    Json,
    /// Python literals: both quote styles, `True`/`False`/`None`, tuples, trailing commas.
    Python,
    /// Anything either accepts, plus repairs.
    Lenient,
}

/// Repairs the lenient dialect needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JsonRepairs {
    pub(crate) trailing_comma: bool,
    pub(crate) single_quotes: bool,
    pub(crate) unquoted: bool,
    pub(crate) unclosed: bool,
}

const MAX_DEPTH: usize = 64;

/// Parses exactly one literal spanning all of `text` (surrounding whitespace allowed).
pub(crate) fn parse_whole(text: &str, dialect: Dialect) -> Option<(Value, JsonRepairs)> {
    let mut p = Parser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
        dialect,
        repairs: JsonRepairs::default(),
    };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    (p.pos == p.s.len()).then_some((value, p.repairs))
}

/// Parses one literal starting at the beginning of `text` (after whitespace); returns it,
/// the repairs and the number of bytes consumed.
pub(crate) fn parse_prefix(text: &str, dialect: Dialect) -> Option<(Value, JsonRepairs, usize)> {
    let mut p = Parser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
        dialect,
        repairs: JsonRepairs::default(),
    };
    p.skip_ws();
    let value = p.value(0)?;
    Some((value, p.repairs, p.pos))
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    dialect: Dialect,
    repairs: JsonRepairs,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn lenient(&self) -> bool {
        self.dialect == Dialect::Lenient
    }

    fn python_ok(&self) -> bool {
        self.dialect != Dialect::Json
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.sequence(depth, b']'),
            b'(' if self.python_ok() => self.sequence(depth, b')'),
            b'"' => self.string(b'"').map(Value::Str),
            b'\'' if self.python_ok() => {
                if self.lenient() {
                    self.repairs.single_quotes = true;
                }
                self.string(b'\'').map(Value::Str)
            }
            _ => self.bare(),
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => {
                    return self.unclosed(Value::Object(entries));
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Some(Value::Object(entries));
                }
                _ => {}
            }
            let key = match self.peek()? {
                b'"' => self.string(b'"')?,
                b'\'' if self.python_ok() => {
                    if self.lenient() {
                        self.repairs.single_quotes = true;
                    }
                    self.string(b'\'')?
                }
                _ if self.lenient() => {
                    let key = self.bare_word(b":")?;
                    self.repairs.unquoted = true;
                    key
                }
                _ => return None,
            };
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.pos += 1,
                None => return self.unclosed(Value::Object(entries)),
                _ => return None,
            }
            self.skip_ws();
            if self.peek().is_none() {
                entries.push((key, Value::Null));
                return self.unclosed(Value::Object(entries));
            }
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.trailing_comma()?;
                    }
                }
                Some(b'}') => {}
                None => return self.unclosed(Value::Object(entries)),
                _ => return None,
            }
        }
    }

    fn sequence(&mut self, depth: usize, close: u8) -> Option<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return self.unclosed(Value::Array(items)),
                Some(c) if c == close => {
                    self.pos += 1;
                    return Some(Value::Array(items));
                }
                _ => {}
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(close) {
                        self.trailing_comma()?;
                    }
                }
                Some(c) if c == close => {}
                None => return self.unclosed(Value::Array(items)),
                _ => return None,
            }
        }
    }

    fn trailing_comma(&mut self) -> Option<()> {
        match self.dialect {
            Dialect::Json => None,
            Dialect::Python => Some(()),
            Dialect::Lenient => {
                self.repairs.trailing_comma = true;
                Some(())
            }
        }
    }

    fn unclosed(&mut self, v: Value) -> Option<Value> {
        if self.lenient() {
            self.repairs.unclosed = true;
            Some(v)
        } else {
            None
        }
    }

    fn string(&mut self, quote: u8) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = self.src.get(self.pos..)?;
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                // End of input inside a string.
                return if self.lenient() {
                    self.repairs.unclosed = true;
                    Some(out)
                } else {
                    None
                };
            };
            self.pos += c.len_utf8();
            if c as u32 == quote as u32 {
                return Some(out);
            }
            if c == '\\' {
                let e = self.src.get(self.pos..)?.chars().next();
                let Some(e) = e else {
                    return if self.lenient() {
                        self.repairs.unclosed = true;
                        Some(out)
                    } else {
                        None
                    };
                };
                self.pos += e.len_utf8();
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    '/' => out.push('/'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' if self.python_ok() => out.push('\''),
                    'u' => {
                        let hex = self.src.get(self.pos..self.pos + 4)?;
                        let code = u32::from_str_radix(hex, 16).ok()?;
                        self.pos += 4;
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    other if self.lenient() => {
                        out.push('\\');
                        out.push(other);
                    }
                    _ => return None,
                }
                continue;
            }
            if c == '\n' && self.dialect != Dialect::Lenient {
                return None;
            }
            out.push(c);
        }
    }

    /// A bare token up to a structural character (or one in `extra_stops`).
    fn bare_word(&mut self, extra_stops: &[u8]) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b'}' | b']' | b')' | b'\n') || extra_stops.contains(&c) {
                break;
            }
            // Step over whole characters so that multi-byte text stays intact.
            let ch = self.src.get(self.pos..)?.chars().next()?;
            self.pos += ch.len_utf8();
        }
        let word = self.src.get(start..self.pos)?.trim();
        (!word.is_empty()).then(|| word.to_string())
    }

    fn bare(&mut self) -> Option<Value> {
        let start = self.pos;
        let word = self.bare_word(b"")?;
        let value = match (word.as_str(), self.dialect) {
            ("true", Dialect::Json | Dialect::Lenient)
            | ("True", Dialect::Python | Dialect::Lenient) => Value::Bool(true),
            ("false", Dialect::Json | Dialect::Lenient)
            | ("False", Dialect::Python | Dialect::Lenient) => Value::Bool(false),
            ("null", Dialect::Json | Dialect::Lenient)
            | ("None", Dialect::Python | Dialect::Lenient) => Value::Null,
            (w, _) if is_number(w) => Value::Number(w.to_string()),
            (w, Dialect::Lenient) => {
                self.repairs.unquoted = true;
                Value::Str(w.to_string())
            }
            _ => {
                self.pos = start;
                return None;
            }
        };
        Some(value)
    }
}

fn is_number(w: &str) -> bool {
    let digits = w.strip_prefix('-').unwrap_or(w);
    !digits.is_empty()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E')
        && digits.as_bytes()[0].is_ascii_digit()
        && digits.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(entries: &[(&str, &str)]) -> Value {
        Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Str(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn strict_json_round_trips_and_rejects_python() {
        let (v, r) = parse_whole(r#"{"方面": "食品评价", "情感": "中性"}"#, Dialect::Json).unwrap();
        assert_eq!(v, obj(&[("方面", "食品评价"), ("情感", "中性")]));
        assert_eq!(r, JsonRepairs::default());
        assert!(parse_whole("{'a': 'b'}", Dialect::Json).is_none());
        assert!(parse_whole(r#"{"a": "b",}"#, Dialect::Json).is_none());
        assert!(parse_whole(r#"{"a": null}"#, Dialect::Python).is_none());
        assert!(parse_whole(r#"("a", 'b',)"#, Dialect::Python).is_some());
    }

    #[test]
    fn lenient_repairs_are_reported() {
        let (v, r) =
            parse_whole("{aspect: 'food', sentiment: positive,}", Dialect::Lenient).unwrap();
        assert_eq!(v, obj(&[("aspect", "food"), ("sentiment", "positive")]));
        assert!(r.single_quotes && r.unquoted && r.trailing_comma && !r.unclosed);
        let (v, r) = parse_whole(r#"{"方面": "食品评价", "情感": "正"#, Dialect::Lenient).unwrap();
        assert_eq!(v, obj(&[("方面", "食品评价"), ("情感", "正")]));
        assert!(r.unclosed);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(parse_whole(&deep, Dialect::Lenient).is_none());
    }
}
