//! Versioned schema migrations, one SQL text per backend where they differ.
//! Applied in order at start (and by `kiln upgrade`); each in a transaction.

pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "requests, builds, steps",
    sqlite: r#"
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    requested_at BIGINT NOT NULL,
    requested_by TEXT,
    reason TEXT
);
CREATE TABLE builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id BIGINT NOT NULL REFERENCES requests(id),
    component TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    requested_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    requested_by TEXT,
    worker TEXT,
    attempt BIGINT NOT NULL DEFAULT 0,
    properties TEXT NOT NULL,
    depends_on TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX builds_by_state ON builds (state, id);
CREATE INDEX builds_by_builder ON builds (component, target, id);
CREATE TABLE steps (
    build_id BIGINT NOT NULL REFERENCES builds(id),
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    log_size BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (build_id, idx)
);
"#,
    postgres: r#"
CREATE TABLE requests (
    id BIGSERIAL PRIMARY KEY,
    requested_at BIGINT NOT NULL,
    requested_by TEXT,
    reason TEXT
);
CREATE TABLE builds (
    id BIGSERIAL PRIMARY KEY,
    request_id BIGINT NOT NULL REFERENCES requests(id),
    component TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    requested_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    requested_by TEXT,
    worker TEXT,
    attempt BIGINT NOT NULL DEFAULT 0,
    properties TEXT NOT NULL,
    depends_on TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX builds_by_state ON builds (state, id);
CREATE INDEX builds_by_builder ON builds (component, target, id);
CREATE TABLE steps (
    build_id BIGINT NOT NULL REFERENCES builds(id),
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    log_size BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (build_id, idx)
);
"#,
}];
