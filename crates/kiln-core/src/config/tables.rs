//! What every table reader shares: the names taken so far by one kind of
//! table, and a table's own `name`.

use crate::names::check_name;
use crate::toml_reader::{Reader, Span, Tbl};
use std::collections::HashMap;

/// The names taken so far by one kind of table, so that a second use of
/// one is reported together with where the first is.
pub(super) struct Names {
    kind: &'static str,
    seen: HashMap<String, Span>,
}

impl Names {
    pub(super) fn new(kind: &'static str) -> Self {
        Names { kind, seen: HashMap::new() }
    }

    /// Whether `name` is not taken yet (it is now); reports it when it is.
    pub(super) fn take(&mut self, r: &mut Reader<'_>, name: &str, span: &Span) -> bool {
        if let Some(first) = self.seen.get(name) {
            let where_ = first
                .as_ref()
                .map(|s| {
                    let (l, c) = r.position(s.start);
                    format!(" (first defined at line {l}, column {c})")
                })
                .unwrap_or_default();
            r.err(span, format!("duplicate {} name {name:?}{where_}", self.kind));
            false
        } else {
            self.seen.insert(name.to_string(), span.clone());
            true
        }
    }
}

/// A table's `name`, checked as a name.
pub(super) fn named(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Option<(String, Span)> {
    let (name, span) = r.required_string(tbl, "name", what)?;
    if let Err(e) = check_name(&name) {
        r.err(&span, format!("{what}: {e}"));
        return None;
    }
    Some((name, span))
}
