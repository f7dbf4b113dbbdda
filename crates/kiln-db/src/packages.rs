//! What each channel holds: published packages, the channel's revision
//! (bumped by every change, so a repository on disk can tell whether it is
//! behind), snapshots, and the builds waiting to be published.

use crate::{Result, Store};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One published file of a channel (a `.deb`, a `.dsc`, an `.rpm`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageRow {
    pub id: i64,
    pub channel: String,
    /// `apt:SUITE` or `yum:TARGET`.
    pub repo: String,
    /// `deb`, `dsc` or `rpm`.
    pub kind: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Path in the channel's pool, relative to the channel directory.
    pub file: String,
    pub sha256: String,
    pub size: i64,
    pub build_id: Option<i64>,
    /// The index entry (JSON), rendered once when the package was published.
    pub entry: String,
    pub published_at: i64,
}

/// A package name and the component that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameOwner {
    /// `deb`, `dsc` or `rpm`.
    pub kind: String,
    pub name: String,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub channel: String,
    pub name: String,
    pub created_at: i64,
    pub revision: i64,
    pub packages: usize,
}

const PACKAGE_COLUMNS: &str =
    "id, channel, repo, kind, name, version, arch, file, sha256, size, build_id, entry, published_at";

fn package_row(r: &AnyRow) -> Result<PackageRow> {
    Ok(PackageRow {
        id: r.try_get(0)?,
        channel: r.try_get(1)?,
        repo: r.try_get(2)?,
        kind: r.try_get(3)?,
        name: r.try_get(4)?,
        version: r.try_get(5)?,
        arch: r.try_get(6)?,
        file: r.try_get(7)?,
        sha256: r.try_get(8)?,
        size: r.try_get(9)?,
        build_id: r.try_get(10)?,
        entry: r.try_get(11)?,
        published_at: r.try_get(12)?,
    })
}

impl Store {
    /// The builds whose packages are waiting to be published.
    pub async fn publishing_builds(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT build_id FROM publishing ORDER BY build_id").fetch_all(&self.reader).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The channel's revision (0 before anything was published).
    pub async fn channel_revision(&self, channel: &str) -> Result<i64> {
        let row = sqlx::query("SELECT revision FROM channels WHERE name = $1")
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }

    /// Every package of a channel, oldest first.
    pub async fn packages(&self, channel: &str) -> Result<Vec<PackageRow>> {
        let rows = sqlx::query(&format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE channel = $1 ORDER BY id"))
            .bind(channel)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(package_row).collect()
    }

    /// A channel's packages for pages: as [`Store::packages`], on the
    /// readers (never holding up the writer).
    pub async fn packages_to_show(&self, channel: &str) -> Result<Vec<PackageRow>> {
        let rows = sqlx::query(&format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE channel = $1 ORDER BY id"))
            .bind(channel)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(package_row).collect()
    }

    /// Every pool file a snapshot of `channel` names (kept by pool cleanup).
    pub async fn snapshot_files(&self, channel: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT packages FROM snapshots WHERE channel = $1")
            .bind(channel)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let text: String = r.try_get(0)?;
            let pkgs: Vec<PackageRow> =
                serde_json::from_str(&text).map_err(|e| crate::StoreError::Corrupt(format!("snapshot: {e}")))?;
            out.extend(pkgs.into_iter().map(|p| p.file));
        }
        Ok(out)
    }

    /// Changes a channel in one transaction: removes the rows `remove`, adds
    /// `add` (their ids are ignored), bumps and returns the revision.
    pub async fn change_channel(&self, channel: &str, add: &[PackageRow], remove: &[i64]) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // A master that lost its lease while publishing changes nothing.
        self.hold_lease(&mut tx).await?;
        for id in remove {
            sqlx::query("DELETE FROM packages WHERE id = $1 AND channel = $2")
                .bind(id)
                .bind(channel)
                .execute(&mut *tx)
                .await?;
        }
        for p in add {
            sqlx::query(
                "INSERT INTO packages (channel, repo, kind, name, version, arch, file, sha256, size, build_id, entry, \
                 published_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(channel)
            .bind(&p.repo)
            .bind(&p.kind)
            .bind(&p.name)
            .bind(&p.version)
            .bind(&p.arch)
            .bind(&p.file)
            .bind(&p.sha256)
            .bind(p.size)
            .bind(p.build_id)
            .bind(&p.entry)
            .bind(p.published_at)
            .execute(&mut *tx)
            .await?;
        }
        let revision = bump_revision(&mut tx, channel).await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// Records `component` as the owner of each `(kind, name)` nobody owns
    /// yet, and takes over those it `adopts`. Returns the names another
    /// component owns, with their owner; when there is any, nothing is
    /// recorded. One transaction, so two publishes cannot both take a name.
    pub async fn claim_package_names(
        &self,
        component: &str,
        names: &[(String, String)],
        adopts: &[String],
    ) -> Result<Vec<NameOwner>> {
        let mut tx = self.pool.begin().await?;
        let mut taken = Vec::new();
        for (kind, name) in names {
            sqlx::query(
                "INSERT INTO package_owners (kind, name, component) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(kind)
            .bind(name)
            .bind(component)
            .execute(&mut *tx)
            .await?;
            let owner: String = sqlx::query("SELECT component FROM package_owners WHERE kind = $1 AND name = $2")
                .bind(kind)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if owner == component {
                continue;
            }
            if adopts.iter().any(|a| a == name) {
                sqlx::query("UPDATE package_owners SET component = $1 WHERE kind = $2 AND name = $3")
                    .bind(component)
                    .bind(kind)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            } else {
                taken.push(NameOwner { kind: kind.clone(), name: name.clone(), owner });
            }
        }
        if taken.is_empty() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(taken)
    }

    /// Saves the channel's current packages as snapshot `name`.
    pub async fn save_snapshot(&self, channel: &str, name: &str, now: i64) -> Result<SnapshotRow> {
        let pkgs = self.packages(channel).await?;
        let revision = self.channel_revision(channel).await?;
        sqlx::query(
            "INSERT INTO snapshots (channel, name, created_at, revision, packages) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(channel)
        .bind(name)
        .bind(now)
        .bind(revision)
        .bind(crate::rows::to_json(&pkgs))
        .execute(&self.pool)
        .await?;
        Ok(SnapshotRow { channel: channel.into(), name: name.into(), created_at: now, revision, packages: pkgs.len() })
    }

    pub async fn snapshots(&self, channel: &str) -> Result<Vec<SnapshotRow>> {
        let rows =
            sqlx::query("SELECT channel, name, created_at, revision, packages FROM snapshots WHERE channel = $1 ORDER BY created_at, name")
                .bind(channel)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(4)?;
                let n = serde_json::from_str::<Vec<serde_json::Value>>(&text).map(|v| v.len()).unwrap_or(0);
                Ok(SnapshotRow {
                    channel: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    revision: r.try_get(3)?,
                    packages: n,
                })
            })
            .collect()
    }

    /// Makes the channel hold exactly what snapshot `name` held; returns the
    /// new revision, or `None` when there is no such snapshot.
    pub async fn restore_snapshot(&self, channel: &str, name: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT packages FROM snapshots WHERE channel = $1 AND name = $2")
            .bind(channel)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get(0)?;
        let pkgs: Vec<PackageRow> =
            serde_json::from_str(&text).map_err(|e| crate::StoreError::Corrupt(format!("snapshot: {e}")))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM packages WHERE channel = $1").bind(channel).execute(&mut *tx).await?;
        tx.commit().await?;
        // Re-inserted with the ids they had, so "oldest first" still holds.
        let revision = self.change_channel(channel, &pkgs, &[]).await?;
        Ok(Some(revision))
    }
}

impl Store {
    /// When a schedule last ran (µs), if ever.
    pub async fn schedule_last_run(&self, name: &str) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT last_run FROM schedules WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// The source fingerprints a schedule last requested builds for, by component.
    pub async fn schedule_fingerprints(&self, schedule: &str) -> Result<std::collections::HashMap<String, String>> {
        let rows = sqlx::query("SELECT component, fingerprint FROM schedule_sources WHERE schedule = $1")
            .bind(schedule)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn set_schedule_fingerprint(&self, schedule: &str, component: &str, fingerprint: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedule_sources (schedule, component, fingerprint) VALUES ($1, $2, $3) \
             ON CONFLICT (schedule, component) DO UPDATE SET fingerprint = excluded.fingerprint",
        )
        .bind(schedule)
        .bind(component)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The revision the poller last saw of a branch.
    pub async fn polled_revision(&self, url: &str, branch: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT revision FROM polled_branches WHERE url = $1 AND branch = $2")
            .bind(url)
            .bind(branch)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// Records `revision` as the branch's if it still is `previous` (none:
    /// first sight); returns whether this call won, so masters sharing a
    /// database act on a push once.
    pub async fn claim_polled_revision(
        &self,
        url: &str,
        branch: &str,
        previous: Option<&str>,
        revision: &str,
    ) -> Result<bool> {
        let q = match previous {
            Some(p) => sqlx::query(
                "UPDATE polled_branches SET revision = $1 WHERE url = $2 AND branch = $3 AND revision = $4",
            )
            .bind(revision)
            .bind(url)
            .bind(branch)
            .bind(p),
            None => sqlx::query(
                "INSERT INTO polled_branches (url, branch, revision) VALUES ($2, $3, $1) ON CONFLICT (url, branch) DO NOTHING",
            )
            .bind(revision)
            .bind(url)
            .bind(branch),
        };
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Records a run of a schedule if its last run is still `previous`;
    /// returns whether this call won (with masters sharing a database, one does).
    pub async fn claim_schedule_run(&self, name: &str, previous: Option<i64>, at: i64) -> Result<bool> {
        let changed = match previous {
            Some(p) => sqlx::query("UPDATE schedules SET last_run = $1 WHERE name = $2 AND last_run = $3")
                .bind(at)
                .bind(name)
                .bind(p)
                .execute(&self.pool)
                .await?
                .rows_affected(),
            None => sqlx::query("INSERT INTO schedules (name, last_run) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(at)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        };
        Ok(changed == 1)
    }
}

impl Store {
    /// Records advisory `id` of `channel` (its JSON `body`) and bumps the
    /// channel's revision, in one transaction; false (and nothing changed)
    /// when the channel already has an advisory with that id.
    pub async fn add_advisory(&self, channel: &str, id: &str, body: &str, now: i64) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        self.hold_lease(&mut tx).await?;
        let taken = sqlx::query("SELECT 1 FROM advisories WHERE channel = $1 AND id = $2")
            .bind(channel)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Ok(None);
        }
        sqlx::query("INSERT INTO advisories (channel, id, created_at, body) VALUES ($1, $2, $3, $4)")
            .bind(channel)
            .bind(id)
            .bind(now)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        let revision = bump_revision(&mut tx, channel).await?;
        tx.commit().await?;
        Ok(Some(revision))
    }

    /// Removes advisory `id` of `channel` and bumps the channel's revision;
    /// `None` (nothing changed) when there is no such advisory.
    pub async fn remove_advisory(&self, channel: &str, id: &str) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        self.hold_lease(&mut tx).await?;
        let gone = sqlx::query("DELETE FROM advisories WHERE channel = $1 AND id = $2")
            .bind(channel)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(None);
        }
        let revision = bump_revision(&mut tx, channel).await?;
        tx.commit().await?;
        Ok(Some(revision))
    }

    /// The advisories of `channel` (JSON bodies), oldest first.
    pub async fn advisories(&self, channel: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT body FROM advisories WHERE channel = $1 ORDER BY created_at, id")
            .bind(channel)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }
}

async fn bump_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>, channel: &str) -> Result<i64> {
    let updated = sqlx::query("UPDATE channels SET revision = revision + 1 WHERE name = $1")
        .bind(channel)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if updated == 0 {
        sqlx::query("INSERT INTO channels (name, revision) VALUES ($1, 1)").bind(channel).execute(&mut **tx).await?;
    }
    let r = sqlx::query("SELECT revision FROM channels WHERE name = $1").bind(channel).fetch_one(&mut **tx).await?;
    Ok(r.try_get(0)?)
}
