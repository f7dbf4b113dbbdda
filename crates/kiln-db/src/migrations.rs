//! Versioned schema migrations. One SQL text serves both backends; the few
//! spellings that differ are placeholders filled in per backend.
//! Applied in order at start (and by `kiln upgrade`); each in a transaction.

use crate::Backend;

pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    /// `{ID}` is an auto-increment 64-bit primary key.
    pub sql: &'static str,
}

impl Migration {
    pub(crate) fn sql_for(&self, backend: Backend) -> String {
        let id = match backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        self.sql.replace("{ID}", id)
    }
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "requests, builds, steps",
        sql: r#"
CREATE TABLE requests (
    id {ID},
    requested_at BIGINT NOT NULL,
    requested_by TEXT,
    reason TEXT
);
CREATE TABLE builds (
    id {ID},
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
    },
    Migration {
        version: 2,
        description: "artifacts",
        sql: r#"
CREATE TABLE artifacts (
    build_id BIGINT NOT NULL REFERENCES builds(id),
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (build_id, name)
);
"#,
    },
    Migration {
        version: 3,
        description: "channels, published packages, snapshots, publish queue",
        sql: r#"
CREATE TABLE publishing (
    build_id BIGINT PRIMARY KEY REFERENCES builds(id)
);
CREATE TABLE channels (
    name TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
CREATE TABLE packages (
    id {ID},
    channel TEXT NOT NULL,
    repo TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    arch TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    build_id BIGINT,
    entry TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX packages_identity ON packages (channel, repo, kind, name, version, arch);
CREATE TABLE snapshots (
    channel TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    packages TEXT NOT NULL,
    PRIMARY KEY (channel, name)
);
"#,
    },
    Migration {
        version: 4,
        description: "builds by request (the console's rows)",
        sql: r#"
CREATE INDEX builds_by_request ON builds (request_id, target, state, component);
"#,
    },
    Migration {
        version: 5,
        description: "schedules",
        sql: r#"
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    last_run BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 6,
        description: "what each schedule last requested (only_if_changed)",
        sql: r#"
CREATE TABLE schedule_sources (
    schedule TEXT NOT NULL,
    component TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (schedule, component)
);
"#,
    },
    Migration {
        version: 7,
        description: "the last revision the poller saw of each git branch",
        sql: r#"
CREATE TABLE polled_branches (
    url TEXT NOT NULL,
    branch TEXT NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (url, branch)
);
"#,
    },
    Migration {
        version: 8,
        description: "users, their permissions and their API tokens (argon2 hashes)",
        sql: r#"
CREATE TABLE users (
    id {ID},
    email TEXT NOT NULL UNIQUE,
    permissions TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_tokens (
    id {ID},
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
"#,
    },
    Migration {
        version: 9,
        description: "which component owns each published package name",
        sql: r#"
CREATE TABLE package_owners (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    component TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
INSERT INTO package_owners (kind, name, component)
    SELECT p.kind, p.name,
           MIN(CASE WHEN b.properties LIKE '%"upload":{%' THEN 'upload:' || b.component ELSE b.component END)
    FROM packages p JOIN builds b ON b.id = p.build_id
    GROUP BY p.kind, p.name;
"#,
    },
    Migration {
        version: 10,
        description: "workers drained for maintenance (finish what runs, take nothing new)",
        sql: r#"
CREATE TABLE worker_drains (
    name TEXT PRIMARY KEY,
    drained_by TEXT NOT NULL,
    reason TEXT,
    drained_at BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 11,
        description: "masters sharing the database (leases), and which master runs each build",
        sql: r#"
CREATE TABLE masters (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    schema_version BIGINT NOT NULL
);
ALTER TABLE builds ADD COLUMN owner TEXT;
"#,
    },
    Migration {
        version: 12,
        description: "lease epochs and fences of masters, cancels asked of another master, which master each worker is connected to",
        sql: r#"
ALTER TABLE builds ADD COLUMN owner_epoch BIGINT;
ALTER TABLE builds ADD COLUMN cancel_asked_by TEXT;
ALTER TABLE masters ADD COLUMN fenced_at BIGINT;
CREATE TABLE worker_sessions (
    name TEXT PRIMARY KEY,
    master TEXT NOT NULL,
    conn BIGINT NOT NULL,
    address TEXT NOT NULL,
    connected_at BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 13,
        description: "retention: builds whose logs and artifacts were removed, and pinned builds",
        sql: r#"
ALTER TABLE builds ADD COLUMN pruned_at BIGINT;
ALTER TABLE builds ADD COLUMN pinned BIGINT NOT NULL DEFAULT 0;
"#,
    },
    Migration {
        version: 14,
        description: "advisories channels publish (YUM updateinfo)",
        sql: r#"
CREATE TABLE advisories (
    channel TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (channel, id)
);
"#,
    },
];
