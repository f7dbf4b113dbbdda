//! Accepting an uploaded source package (the Maemo "drop" flow). The
//! caller first opens a [`Staging`] area ([`begin`]), the HTTP edge streams
//! the files into it, then [`accept`] checks them against the control file
//! and the config and queues builds on the chosen targets. A rejected
//! upload is kept under `DATA_DIR/rejected/` with a `REASON`; an accepted
//! one under `DATA_DIR/uploads/<id>/`, where its builds take it from.

use super::requests::{store_request, with_source, Created};
use super::OpError;
use crate::caller::Caller;
use crate::shared::Shared;
use crate::uploads::{self, UploadKind};
use kiln_core::job::BuildSource;
use kiln_core::perm::Permission;
use kiln_core::props::{request_properties, PropertySource};
use kiln_core::{BuildState, Family};
use kiln_db::{BuildFilter, NewBuild};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An upload on its way in: a directory under `incoming/` that is removed
/// when this is dropped, whatever happened.
pub struct Staging {
    id: String,
    dir: PathBuf,
    names: Vec<String>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Staging {
    /// Where the file `name` of the upload is to be written. Refuses a name
    /// that is not one plain file name, and a name given twice.
    pub fn file(&mut self, name: &str) -> Result<PathBuf, OpError> {
        if !uploads::valid_upload_name(name) {
            return Err(OpError::Invalid(format!(
                "invalid file name {name:?}: one path segment of letters, digits and ._+-~:"
            )));
        }
        if self.names.iter().any(|n| n == name) {
            return Err(OpError::Invalid(format!("{name} is in the upload twice")));
        }
        self.names.push(name.to_string());
        Ok(self.dir.join(name))
    }
}

/// What the uploader chose besides the files.
#[derive(Debug, Clone, Default)]
pub struct UploadChoice {
    /// Targets to build on; none means every target of the package's family.
    pub targets: Vec<String>,
    pub properties: BTreeMap<String, String>,
}

/// An accepted upload and the builds it queued.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub upload_id: String,
    pub source: String,
    pub version: String,
    pub created: Created,
}

/// Opens a staging area for an upload by `caller` (own_jobs).
pub fn begin(s: &Shared, caller: &Caller) -> Result<Staging, OpError> {
    caller.require(Permission::OwnJobs)?;
    let id = crate::caller::random_token().map_err(OpError::internal)?[..16].to_string();
    let dir = s.farm().data_dir().join("incoming").join(format!("upload-{id}"));
    std::fs::create_dir_all(&dir).map_err(OpError::internal)?;
    Ok(Staging { id, dir, names: Vec::new() })
}

/// Checks the staged upload and queues its builds.
pub async fn accept(s: &Shared, caller: &Caller, staging: Staging, choice: UploadChoice) -> Result<Accepted, OpError> {
    caller.require(Permission::OwnJobs)?;
    let who = caller.name.as_str();
    let properties = request_properties(&choice.properties, PropertySource::Request)?;
    super::requests::may_ask(caller, &properties)?;
    let farm = s.farm();
    let data_dir = farm.data_dir();
    let upload_id = staging.id.clone();
    let stem = staging
        .names
        .iter()
        .find(|n| n.ends_with(".changes") || n.ends_with(".dsc") || n.ends_with(".src.rpm"))
        .cloned()
        .unwrap_or_else(|| format!("upload-{upload_id}"));
    let reject = |problems: Vec<String>| {
        let kept = uploads::reject(&data_dir, &staging.dir, &stem, &problems);
        let kept = kept.map(|p| p.display().to_string()).unwrap_or_else(|e| format!("(could not be kept: {e})"));
        tracing::warn!(upload = %upload_id, by = %who, kept = %kept, "upload rejected: {}", problems.join("; "));
        OpError::Rejected(format!("upload rejected: {}", problems.join("; ")))
    };
    let checked = {
        let (dir, names) = (staging.dir.clone(), staging.names.clone());
        tokio::task::spawn_blocking(move || uploads::check(&dir, &names)).await.map_err(OpError::internal)?
    };
    let checked = match checked {
        Ok(c) => c,
        Err(problems) => return Err(reject(problems)),
    };
    if let Err(e) = kiln_core::names::check_name(&checked.source) {
        return Err(reject(vec![format!("source package name: {e}")]));
    }
    let family = if checked.kind == UploadKind::SrcRpm { Family::Rpm } else { Family::Deb };
    let mut targets = choice.targets;
    let mut problems = Vec::new();
    if targets.is_empty() {
        targets = farm.cfg.targets.iter().filter(|t| t.family == family).map(|t| t.name.clone()).collect();
        if targets.is_empty() {
            problems.push(format!("no {family} target is configured"));
        }
    }
    for t in &targets {
        match farm.cfg.target(t) {
            None => {
                let known: Vec<&str> = farm.cfg.targets.iter().map(|t| t.name.as_str()).collect();
                problems.push(format!("unknown target {t:?}; known targets: {}", known.join(", ")));
            }
            Some(target) if target.family != family => {
                problems.push(format!("target {t} builds {} packages, not {family}", target.family))
            }
            Some(_) => {
                let done = s
                    .store
                    .list_builds(&BuildFilter {
                        state: Some(BuildState::Succeeded),
                        component: Some(checked.source.clone()),
                        target: Some(t.clone()),
                        before: None,
                        limit: 1000,
                    })
                    .await?;
                if let Some(b) =
                    done.iter().find(|b| b.properties.get("version").is_some_and(|p| p.value == checked.version))
                {
                    problems.push(format!(
                        "version {} of {} was already built on {t} (build {})",
                        checked.version, checked.source, b.id
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(reject(problems));
    }
    let kept = uploads::kept_dir(&data_dir, &upload_id);
    tokio::fs::create_dir_all(kept.parent().unwrap_or(&data_dir)).await.map_err(OpError::internal)?;
    tokio::fs::rename(&staging.dir, &kept).await.map_err(OpError::internal)?;
    let properties = with_source(properties, &BuildSource::Upload(upload_id.clone()));
    let builds: Vec<NewBuild> = targets
        .iter()
        .map(|t| NewBuild {
            component: checked.source.clone(),
            target: t.clone(),
            properties: properties.clone(),
            depends_on: Vec::new(),
        })
        .collect();
    let reason = format!("upload of {} {}", checked.source, checked.version);
    let created = store_request(s, caller, Some(&reason), builds).await?;
    tracing::info!(upload = %upload_id, source = %checked.source, version = %checked.version, by = %who, "upload accepted");
    Ok(Accepted { upload_id, source: checked.source, version: checked.version, created })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use crate::ops::testing::{user, Tester};
    use sha2::Digest;

    /// Stages a `.dsc` listing one file; `tamper` changes the file after.
    fn stage(staging: &mut Staging, tamper: bool) {
        let orig = b"hello upstream".to_vec();
        let sha = hex::encode(sha2::Sha256::digest(&orig));
        let dsc =
            format!("Source: hello-up\nVersion: 1.0-1\nChecksums-Sha256:\n {sha} {} hello-up_1.0.tar.gz\n", orig.len());
        std::fs::write(staging.file("hello-up_1.0-1.dsc").expect("dsc name"), dsc).expect("dsc");
        let body = if tamper { b"hello UPSTREAM".to_vec() } else { orig };
        std::fs::write(staging.file("hello-up_1.0.tar.gz").expect("tar name"), body).expect("tar");
    }

    #[tokio::test]
    async fn a_checked_upload_is_kept_and_builds_on_its_family() {
        let mut t = Tester::new().await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let mut staging = begin(&t.shared, &ann).expect("staging");
        assert!(matches!(staging.file("../escape.dsc"), Err(OpError::Invalid(_))));
        stage(&mut staging, false);
        assert!(matches!(staging.file("hello-up_1.0.tar.gz"), Err(OpError::Invalid(_))), "twice");
        let accepted = accept(&t.shared, &ann, staging, UploadChoice::default()).await.expect("accepted");
        assert_eq!((accepted.source.as_str(), accepted.version.as_str()), ("hello-up", "1.0-1"));
        let rows = match t.next_event() {
            Some(Event::Queued(rows)) => rows,
            _ => panic!("no builds queued"),
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].target, "debian-12-amd64");
        assert_eq!(BuildSource::of(&rows[0].properties), BuildSource::Upload(accepted.upload_id.clone()));
        let kept = t.shared.farm().data_dir().join("uploads").join(&accepted.upload_id);
        assert!(kept.join("hello-up_1.0.tar.gz").is_file());
        assert_eq!(std::fs::read_dir(t.shared.farm().data_dir().join("incoming")).expect("incoming").count(), 0);
    }

    #[tokio::test]
    async fn a_mismatching_upload_is_rejected_and_kept_aside() {
        let mut t = Tester::new().await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let mut staging = begin(&t.shared, &ann).expect("staging");
        stage(&mut staging, true);
        let refused = accept(&t.shared, &ann, staging, UploadChoice::default()).await.expect_err("rejected");
        assert!(matches!(&refused, OpError::Rejected(m) if m.contains("SHA256 checksum mismatch")), "{refused:?}");
        assert!(t.next_event().is_none());
        let rejected = t.shared.farm().data_dir().join("rejected/hello-up_1.0-1.dsc");
        assert!(rejected.join("REASON").is_file());
        let carl = user("carl@example.org", &[]);
        assert!(matches!(begin(&t.shared, &carl), Err(OpError::Forbidden(_))));
    }
}
