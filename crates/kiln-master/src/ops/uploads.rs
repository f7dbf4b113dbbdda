//! Accepting an uploaded source package (the Maemo "drop" flow). The
//! caller first opens a [`Staging`] area ([`begin`]), the HTTP edge streams
//! the files into it, then [`accept`] checks them against the control file
//! and the config and queues builds on the chosen targets. A rejected
//! upload is kept under `DATA_DIR/rejected/` with a `REASON`; an accepted
//! one under `DATA_DIR/uploads/<id>/`, where its builds take it from.
//!
//! With an uploaders keyring (`[uploads]`), a clear-signed control file
//! must verify, and its signer is recorded as who asked for the builds;
//! with `require_signature`, an unsigned one is rejected ([`authenticate`]).

use super::requests::{store_request, with_source, Created};
use super::OpError;
use crate::caller::Caller;
use crate::shared::Shared;
use crate::uploads::{self, Control, UploadKind};
use kiln_core::job::BuildSource;
use kiln_core::perm::Permission;
use kiln_core::props::{request_properties, Property, PropertySource, SIGNED_BY_PROPERTY};
use kiln_core::{BuildState, Family};
use kiln_db::{BuildFilter, NewBuild};
use kiln_repo::uploadsig::{verify_cleartext, Keyring, Verified, VerifyError};
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

    /// Where a file already given to the upload is.
    pub fn file_path(&self, name: &str) -> Option<PathBuf> {
        self.names.iter().any(|n| n == name).then(|| self.dir.join(name))
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
    /// The user id of the key that signed it, when signed.
    pub signer: Option<String>,
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
        let (keyring, required) = (farm.uploaders.clone(), farm.cfg.uploads.require_signature);
        tokio::task::spawn_blocking(move || {
            let mut control = uploads::read_control(&dir, &names)?;
            let signer = authenticate(&mut control, keyring.as_deref(), required)?;
            Ok::<_, Vec<String>>((uploads::check(&dir, &control)?, signer))
        })
        .await
        .map_err(OpError::internal)?
    };
    let (checked, signer) = match checked {
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
    // The move itself on disk before the upload is answered.
    let uploads_dir = kept.parent().unwrap_or(&data_dir).to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&uploads_dir).and_then(|d| d.sync_all()))
        .await
        .map_err(OpError::internal)?
        .map_err(OpError::internal)?;
    let mut properties = with_source(properties, &BuildSource::Upload(upload_id.clone()));
    // The signer is who the upload is from; the caller only carried it in.
    let asker = match &signer {
        Some(v) => {
            properties.insert(
                SIGNED_BY_PROPERTY.to_string(),
                Property { value: v.fingerprint.clone(), source: PropertySource::Request },
            );
            caller.named(uploads::signed_requester(&v.user_id, &caller.name))
        }
        None => caller.clone(),
    };
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
    let created = store_request(s, &asker, Some(&reason), builds).await?;
    let signed_by = signer.as_ref().map(|v| v.fingerprint.as_str()).unwrap_or("-");
    tracing::info!(upload = %upload_id, source = %checked.source, version = %checked.version, by = %who, signed_by, "upload accepted");
    let signer = signer.map(|v| v.user_id);
    Ok(Accepted { upload_id, signer, source: checked.source, version: checked.version, created })
}

/// Whether the upload's control file is signed by an uploader, as
/// `[uploads]` asks. Without a keyring nothing is checked. With one, a
/// clear-signed control file must verify, and from then on the text that
/// was signed stands for the file (so nothing unsigned around it is ever
/// read). A signature by a key the farm does not know (or no longer
/// trusts) proves nothing: it rejects the upload when signatures are
/// required and is ignored when they are not. A bad signature, or a
/// signed message that does not parse, always rejects: the file is not
/// what it claims to be.
fn authenticate(
    control: &mut Control,
    keyring: Option<&Keyring>,
    required: bool,
) -> Result<Option<Verified>, Vec<String>> {
    let Some(keyring) = keyring else { return Ok(None) };
    let name = control.name.clone();
    let Some(text) = &control.text else {
        return if required {
            Err(vec![format!(
                "{name}: a .src.rpm upload has no clear-signed .changes or .dsc, and this farm accepts signed uploads only"
            )])
        } else {
            Ok(None)
        };
    };
    match verify_cleartext(text, keyring) {
        Ok(v) => {
            control.text = Some(v.body.clone());
            Ok(Some(v))
        }
        Err(VerifyError::NotSigned) if required => Err(vec![format!(
            "the {} is not signed ({name}); this farm accepts only uploads clear-signed by a key of its uploaders keyring",
            control.kind.suffix()
        )]),
        Err(VerifyError::NotSigned) => Ok(None),
        Err(e @ (VerifyError::BadSignature(_) | VerifyError::Malformed(_))) => Err(vec![format!("{name}: {e}")]),
        Err(e) if required => Err(vec![format!("{name}: {e}")]),
        Err(e) => {
            tracing::info!(file = %name, reason = %e, "signature not from an uploader; the upload counts as unsigned");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use crate::ops::testing::{user, Tester};
    use kiln_repo::key::SigningKey;
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
        let staged = std::fs::read_dir(t.shared.farm().data_dir().join("incoming")).expect("incoming").flatten();
        assert_eq!(staged.filter(|e| e.file_name().to_string_lossy().starts_with("upload-")).count(), 0);
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

    /// Stages a `.changes` of hello-up 1.0-1 listing one file, its text
    /// made by `sign` from the plain control text.
    fn stage_changes(staging: &mut Staging, sign: impl FnOnce(String) -> String) {
        let orig = b"hello upstream".to_vec();
        let sha = hex::encode(sha2::Sha256::digest(&orig));
        let changes = format!(
            "Format: 1.8\nSource: hello-up\nVersion: 1.0-1\nChecksums-Sha256:\n {sha} {} hello-up_1.0.tar.gz\n",
            orig.len()
        );
        let name = staging.file("hello-up_1.0-1_source.changes").expect("changes name");
        std::fs::write(name, sign(changes)).expect("changes");
        std::fs::write(staging.file("hello-up_1.0.tar.gz").expect("tar name"), orig).expect("tar");
    }

    fn key(user_id: &str) -> SigningKey {
        SigningKey::generate(user_id, None, kiln_core::channel::KeyAlgorithm::Ed25519).expect("key")
    }

    /// A farm whose uploaders keyring holds `keys`.
    async fn farm_with_uploaders(keys: &[&SigningKey], required: bool) -> Tester {
        let ring: Vec<String> = keys.iter().map(|k| k.public_armored().expect("armor")).collect();
        let config = format!(
            "{}\n[uploads]\nkeyring = \"uploaders.asc\"\nrequire_signature = {required}\n",
            crate::ops::testing::FARM
        );
        Tester::with_files(&config, &[("uploaders.asc", &ring.join("\n"))]).await
    }

    async fn upload(t: &Tester, who: &Caller, sign: impl FnOnce(String) -> String) -> Result<Accepted, OpError> {
        let mut staging = begin(&t.shared, who).expect("staging");
        stage_changes(&mut staging, sign);
        accept(&t.shared, who, staging, UploadChoice::default()).await
    }

    #[tokio::test]
    async fn a_farm_that_requires_signatures_takes_only_uploads_signed_by_its_uploaders() {
        let (jane, mallory) = (key("Jane Doe <jane@example.org>"), key("Mallory <mallory@example.org>"));
        let mut t = farm_with_uploaders(&[&jane], true).await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);

        let accepted = upload(&t, &ann, |c| jane.clearsign(&c).expect("sign")).await.expect("signed by jane");
        assert_eq!((accepted.source.as_str(), accepted.version.as_str()), ("hello-up", "1.0-1"));
        let rows = match t.next_event() {
            Some(Event::Queued(rows)) => rows,
            _ => panic!("no builds queued"),
        };
        assert_eq!(
            rows[0].requested_by.as_deref(),
            Some("Jane Doe <jane@example.org> (signed upload, via ann@example.org)")
        );
        assert_eq!(rows[0].properties[SIGNED_BY_PROPERTY].value, jane.fingerprint());
        let stored = t.shared.store.build(rows[0].id).await.expect("store").expect("stored");
        assert_eq!(stored.requested_by, rows[0].requested_by);
        // ann carried it in: she may cancel it; a rebuild is hers, of the same signed upload.
        assert_eq!(crate::ops::builds::may_cancel(&ann, stored.requested_by.as_deref()), Ok(()));
        let again = crate::ops::requests::rebuild(&t.shared, &ann, stored.id).await.expect("rebuild");
        assert_eq!(again.builds[0].requested_by.as_deref(), Some("ann@example.org"));
        assert_eq!(again.builds[0].properties[SIGNED_BY_PROPERTY].value, jane.fingerprint());
        assert!(matches!(t.next_event(), Some(Event::Queued(_))));

        let refusals = [
            (upload(&t, &ann, |c| c).await, "the .changes is not signed (hello-up_1.0-1_source.changes)".to_string()),
            (
                upload(&t, &ann, |c| mallory.clearsign(&c).expect("sign")).await,
                format!("signed by key 0x{} which is not in the uploaders keyring", mallory.fingerprint()),
            ),
            (
                upload(&t, &ann, |c| jane.clearsign(&c).expect("sign").replace("1.0-1", "9.9-9")).await,
                format!("bad signature (by key 0x{})", jane.fingerprint()),
            ),
        ];
        for (outcome, reason) in refusals {
            assert!(matches!(&outcome, Err(OpError::Rejected(m)) if m.contains(&reason)), "{reason}: {outcome:?}");
        }
        assert!(t.next_event().is_none(), "no build of a refused upload");
        let rejected = t.shared.farm().data_dir().join("rejected");
        let reason = std::fs::read_to_string(rejected.join("hello-up_1.0-1_source.changes/REASON")).expect("kept");
        assert!(reason.contains("is not signed"), "{reason}");
        assert!(rejected.join("hello-up_1.0-1_source.changes.2/hello-up_1.0.tar.gz").is_file(), "files kept");
    }

    #[tokio::test]
    async fn with_optional_signatures_an_uploader_is_named_and_others_count_as_unsigned() {
        let (jane, mallory) = (key("Jane Doe <jane@example.org>"), key("Mallory <mallory@example.org>"));
        let mut t = farm_with_uploaders(&[&jane], false).await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        fn requester(t: &mut Tester) -> (Option<String>, Option<Property>) {
            match t.next_event() {
                Some(Event::Queued(rows)) => {
                    (rows[0].requested_by.clone(), rows[0].properties.get(SIGNED_BY_PROPERTY).cloned())
                }
                _ => panic!("no builds queued"),
            }
        }

        upload(&t, &ann, |c| c).await.expect("unsigned");
        assert_eq!(requester(&mut t), (Some("ann@example.org".to_string()), None));
        upload(&t, &ann, |c| mallory.clearsign(&c).expect("sign")).await.expect("signed by a stranger");
        assert_eq!(requester(&mut t), (Some("ann@example.org".to_string()), None));
        upload(&t, &ann, |c| jane.clearsign(&c).expect("sign")).await.expect("signed by jane");
        let (by, signed_by) = requester(&mut t);
        assert_eq!(by.as_deref(), Some("Jane Doe <jane@example.org> (signed upload, via ann@example.org)"));
        assert_eq!(signed_by.map(|p| p.value), Some(jane.fingerprint()));
        // A bad signature by an uploader's key is refused all the same.
        let tampered = upload(&t, &ann, |c| jane.clearsign(&c).expect("sign").replace("1.0-1", "9.9-9")).await;
        assert!(matches!(&tampered, Err(OpError::Rejected(m)) if m.contains("bad signature")), "{tampered:?}");
    }

    #[test]
    fn the_signed_text_is_what_gets_checked() {
        let jane = key("Jane Doe <jane@example.org>");
        let ring = Keyring::from_armored(&jane.public_armored().expect("armor")).expect("ring");
        let signed = jane.clearsign("Source: real\nVersion: 1\n").expect("sign");
        let mut control = Control { kind: UploadKind::Dsc, name: "real_1.dsc".into(), text: Some(signed) };
        let v = authenticate(&mut control, Some(&ring), true).expect("verified").expect("signer");
        assert_eq!(control.text.as_deref(), Some(v.body.as_str()));
        assert!(!v.body.contains("PGP"), "{}", v.body);
        // A .src.rpm has nothing to verify: refused when signatures are required.
        let mut srpm = Control { kind: UploadKind::SrcRpm, name: "x-1-1.src.rpm".into(), text: None };
        assert!(authenticate(&mut srpm, Some(&ring), true).is_err());
        assert!(matches!(authenticate(&mut srpm, Some(&ring), false), Ok(None)));
        assert!(matches!(authenticate(&mut srpm, None, false), Ok(None)));
    }
}
