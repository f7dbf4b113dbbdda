//! What a config that does not parse yields: every problem, positioned.

use crate::toml_reader::Diagnostic;
use std::fmt;

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    /// One `file:line:col: message` line per problem.
    pub fn render(&self, file: &str) -> String {
        self.diagnostics
            .iter()
            .map(|d| {
                if d.line == 0 {
                    format!("{file}: {}", d.message)
                } else {
                    format!("{file}:{}:{}: {}", d.line, d.col, d.message)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("config"))
    }
}

impl std::error::Error for ConfigErrors {}
