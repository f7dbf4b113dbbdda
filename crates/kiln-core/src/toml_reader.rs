//! A small reader over a parsed TOML document that keeps byte spans, so every
//! problem in a config file can be reported as `file:line:col: message`, and
//! all of them at once rather than the first one only.

use std::ops::Range;
use toml_edit::{Item, TableLike, Value};

pub(crate) type Span = Option<Range<usize>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line, or 0 when the problem has no position.
    pub line: usize,
    /// 1-based column in characters.
    pub col: usize,
    pub message: String,
}

pub(crate) struct Reader<'s> {
    src: &'s str,
    pub(crate) diags: Vec<Diagnostic>,
}

/// Something a config table can be read from, with the span to blame when a
/// required key is missing.
#[derive(Clone, Copy)]
pub(crate) struct Tbl<'a> {
    pub(crate) t: &'a dyn TableLike,
    pub(crate) span: &'a Span,
}

impl<'s> Reader<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        Reader { src, diags: Vec::new() }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = self.src.get(..offset).unwrap_or(self.src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    pub(crate) fn err(&mut self, span: &Span, message: impl Into<String>) {
        let (line, col) = match span {
            Some(r) => self.position(r.start),
            None => (0, 0),
        };
        self.diags.push(Diagnostic { line, col, message: message.into() });
    }

    /// Reports every key of `t` that is not in `allowed`.
    pub(crate) fn check_keys(&mut self, t: Tbl<'_>, allowed: &[&str], what: &str) {
        let keys: Vec<String> = t.t.iter().map(|(k, _)| k.to_string()).collect();
        for k in keys {
            if !allowed.contains(&k.as_str()) {
                let span = t.t.get_key_value(&k).and_then(|(key, _)| key.span());
                self.err(&span, format!("unknown key `{k}` in {what}; known keys: {}", allowed.join(", ")));
            }
        }
    }

    fn value<'a>(&mut self, t: Tbl<'a>, key: &str) -> Option<(&'a Item, Span)> {
        t.t.get(key).map(|item| (item, item.span()))
    }

    pub(crate) fn string(&mut self, t: Tbl<'_>, key: &str, what: &str) -> Option<(String, Span)> {
        let (item, span) = self.value(t, key)?;
        match item.as_str() {
            Some(s) => Some((s.to_string(), span)),
            None => {
                self.err(&span, format!("`{key}` in {what} must be a string"));
                None
            }
        }
    }

    pub(crate) fn required_string(&mut self, t: Tbl<'_>, key: &str, what: &str) -> Option<(String, Span)> {
        if t.t.get(key).is_none() {
            self.err(t.span, format!("{what} needs `{key}`"));
            return None;
        }
        self.string(t, key, what)
    }

    /// A duration written `"90s"`, `"1h30m"` or as whole seconds.
    pub(crate) fn duration(&mut self, t: Tbl<'_>, key: &str, what: &str) -> Option<std::time::Duration> {
        if let Some(item) = t.t.get(key) {
            if let Some(i) = item.as_integer() {
                if i < 0 {
                    self.err(&item.span(), format!("`{key}` in {what} may not be negative"));
                    return None;
                }
                return Some(std::time::Duration::from_secs(i as u64));
            }
        }
        let (text, span) = self.string(t, key, what)?;
        match crate::duration::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(&span, format!("`{key}` in {what}: {e}"));
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, t: Tbl<'_>, key: &str, what: &str) -> Option<bool> {
        let (item, span) = self.value(t, key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.err(&span, format!("`{key}` in {what} must be true or false"));
                None
            }
        }
    }

    pub(crate) fn string_list(&mut self, t: Tbl<'_>, key: &str, what: &str) -> Option<Vec<(String, Span)>> {
        let (item, span) = self.value(t, key)?;
        let Some(arr) = item.as_array() else {
            self.err(&span, format!("`{key}` in {what} must be a list of strings"));
            return None;
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            match v.as_str() {
                Some(s) => out.push((s.to_string(), v.span())),
                None => self.err(&v.span(), format!("`{key}` in {what} must hold only strings")),
            }
        }
        Some(out)
    }

    /// A table of string values, e.g. `env = { CC = "gcc" }`.
    pub(crate) fn string_map(&mut self, t: Tbl<'_>, key: &str, what: &str) -> Option<Vec<(String, String, Span)>> {
        let (item, span) = self.value(t, key)?;
        let Some(tbl) = item.as_table_like() else {
            self.err(&span, format!("`{key}` in {what} must be a table of strings"));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in tbl.iter() {
            let vspan = v.span();
            match v.as_str() {
                Some(s) => out.push((k.to_string(), s.to_string(), vspan)),
                None => match v.as_value() {
                    // Numbers and booleans are accepted and kept as written.
                    Some(Value::Integer(i)) => out.push((k.to_string(), i.value().to_string(), vspan)),
                    Some(Value::Boolean(b)) => out.push((k.to_string(), b.value().to_string(), vspan)),
                    _ => self.err(&vspan, format!("`{key}.{k}` in {what} must be a string")),
                },
            }
        }
        Some(out)
    }

    /// The tables of an array of tables (`[[worker]]`) or an inline array of
    /// inline tables (`steps = [ {..}, {..} ]`).
    pub(crate) fn tables<'a>(&mut self, item: &'a Item, what: &str) -> Vec<(&'a dyn TableLike, Span)> {
        if let Some(aot) = item.as_array_of_tables() {
            return aot.iter().map(|t| (t as &dyn TableLike, t.span())).collect();
        }
        if let Some(arr) = item.as_array() {
            let mut out = Vec::new();
            for v in arr.iter() {
                match v.as_inline_table() {
                    Some(t) => out.push((t as &dyn TableLike, t.span())),
                    None => self.err(&v.span(), format!("each entry of {what} must be a table")),
                }
            }
            return out;
        }
        self.err(&item.span(), format!("{what} must be a list of tables"));
        Vec::new()
    }
}
