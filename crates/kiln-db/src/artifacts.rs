//! The files builds produced (stored by content on the master): recording
//! them and listing them.

use crate::rows::{artifact_row, id_list, ArtifactRow};
use crate::store::Store;
use crate::Result;

impl Store {
    /// Records an artifact of a build (replacing one of the same name).
    pub async fn add_artifact(&self, a: &ArtifactRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO artifacts (build_id, name, size, sha256) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (build_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
        )
        .bind(a.build_id)
        .bind(&a.name)
        .bind(a.size)
        .bind(&a.sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Artifacts of many builds, by build then name.
    pub async fn artifacts_of(&self, build_ids: &[i64]) -> Result<Vec<ArtifactRow>> {
        if build_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = id_list(build_ids);
        let rows = sqlx::query(&format!(
            "SELECT build_id, name, size, sha256 FROM artifacts WHERE build_id IN ({list}) ORDER BY build_id, name"
        ))
        .persistent(false)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(artifact_row).collect()
    }
}
