//! The incoming directory (`[uploads] incoming_dir`), the autobuilder's
//! drop box: uploads copied there with scp, sftp or dput are taken exactly
//! like HTTP uploads ([`crate::ops::uploads`]: checked, built or rejected
//! into `DATA_DIR/rejected/` with a `REASON`). Which files make a complete
//! upload, and when, is [`kiln_core::incoming::ready`]; this task looks at
//! the directory every couple of seconds, moves a ready upload's files into
//! a staging area and hands it over, then mails the uploader (the
//! `.changes`' `Changed-By`, or the signing key's owner) and `[uploads] mail`.
//!
//! Uploads come from whoever may write the directory: they are requested
//! as the system caller `incoming` (or the signer, with a keyring), and
//! `require_signature` holds here as for HTTP.

use crate::caller::Caller;
use crate::ops::uploads::{accept, begin, UploadChoice};
use crate::ops::OpError;
use crate::shared::Shared;
use crate::uploads::{copy_plain, read_plain, reject_file, valid_upload_name};
use kiln_core::incoming::{ready, Entry, Ready};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const TICK: Duration = Duration::from_secs(2);
/// A control file larger than this is not read for its file list (it is
/// still taken, and rejected, once quiet).
const MAX_CONTROL: u64 = 1 << 20;

pub async fn run(shared: Arc<Shared>) {
    let mut announced = None;
    loop {
        tokio::time::sleep(TICK).await;
        let farm = shared.farm();
        let Some(dir) = farm.incoming_dir() else { continue };
        if announced.as_ref() != Some(&dir) {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                tracing::error!(dir = %dir.display(), error = %e, "cannot make the incoming directory");
                continue;
            }
            tracing::info!(dir = %dir.display(), "watching the incoming directory for uploads");
            announced = Some(dir.clone());
        }
        let (quiet, wait) = (farm.cfg.uploads.incoming_quiet, farm.cfg.uploads.incoming_wait);
        drop(farm);
        let scanned = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || scan(&dir)).await
        };
        let entries = match scanned {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the incoming directory");
                continue;
            }
            Err(_) => continue,
        };
        for verdict in ready(&entries, quiet, wait) {
            match verdict {
                Ready::Upload { control, files } => take(&shared, &dir, &control, &files).await,
                Ready::Stray(name) => {
                    let reason = format!("{name} stayed in the incoming directory with no .changes or .dsc naming it");
                    match reject_file(&shared.farm().data_dir(), &dir.join(&name), &reason) {
                        Ok(kept) => tracing::warn!(file = %name, kept = %kept.display(), "{reason}"),
                        Err(e) => tracing::error!(file = %name, error = %e, "cannot move a stray file out of incoming"),
                    }
                }
            }
        }
    }
}

/// The plain files in the directory (links, directories and names kiln
/// would not accept in an upload are left alone), each control file read
/// for the files it lists.
fn scan(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let now = SystemTime::now();
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = e.path().symlink_metadata() else { continue };
        if !meta.is_file() || name.starts_with('.') || !valid_upload_name(&name) {
            continue;
        }
        // The change time, which `scp -p` and rsync cannot set back.
        let changed = {
            use std::os::unix::fs::MetadataExt;
            SystemTime::UNIX_EPOCH
                + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().clamp(0, 999_999_999) as u32)
        };
        let age = now.duration_since(changed).unwrap_or_default();
        let lists = if name.ends_with(".src.rpm") {
            Some(Vec::new())
        } else if name.ends_with(".changes") || name.ends_with(".dsc") {
            listed(dir, &name)
        } else {
            None
        };
        entries.push(Entry { name, age, lists });
    }
    Ok(entries)
}

/// What a `.dsc` or `.changes` lists (a `.changes`: with what its `.dsc`
/// lists, when that is here).
fn listed(dir: &Path, name: &str) -> Option<Vec<String>> {
    let read = |n: &str| -> Option<Vec<String>> {
        let text = String::from_utf8(read_plain(&dir.join(n), MAX_CONTROL)?).ok()?;
        let upload = kiln_core::deb822::parse_source_upload(&text).ok()?;
        Some(upload.files.into_iter().map(|f| f.name).collect())
    };
    let mut files = read(name)?;
    if name.ends_with(".changes") {
        let dscs: Vec<String> = files.iter().filter(|f| f.ends_with(".dsc")).cloned().collect();
        for dsc in dscs {
            for f in read(&dsc).unwrap_or_default() {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
    }
    Some(files)
}

/// The uploader a `.changes` names (`Changed-By`), else a `.dsc`'s `Maintainer`.
fn uploader(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let p = kiln_core::deb822::parse_paragraph(text).ok()?;
    ["Changed-By", "Maintainer"]
        .iter()
        .find_map(|k| p.iter().find(|(f, _)| f.eq_ignore_ascii_case(k)).map(|(_, v)| v.trim().to_string()))
        .filter(|v| !v.is_empty() && !v.contains('\n'))
}

/// How long an upload claimed by a master stays its own: a claim older
/// than this was left by a master that died while taking it.
const CLAIM_STALE: Duration = Duration::from_secs(600);

/// Claims the upload `control` for this master: masters sharing the
/// incoming directory take each upload once. The claim is a file made with
/// O_EXCL (atomic on local file systems and NFS alike), removed when the
/// upload was taken; `None` when another master has it.
fn claim(dir: &Path, control: &str) -> Option<std::path::PathBuf> {
    let path = dir.join(format!(".{control}.taking"));
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => {
                // Taken whole by another master since this one looked.
                if !dir.join(control).exists() {
                    let _ = std::fs::remove_file(&path);
                    return None;
                }
                return Some(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if age.is_none_or(|a| a <= CLAIM_STALE) {
                    return None;
                }
                // Moved aside under a name of this process's own: of two
                // masters finding it stale, one moves it, the other fails.
                let aside = dir.join(format!(".{control}.stale.{}", std::process::id()));
                if std::fs::rename(&path, &aside).is_err() {
                    return None;
                }
                tracing::warn!(upload = %control, "removed a stale claim on an upload (its master died taking it)");
                let _ = std::fs::remove_file(&aside);
            }
            Err(e) => {
                tracing::error!(upload = %control, error = %e, "cannot claim an upload in the incoming directory");
                return None;
            }
        }
    }
    None
}

async fn take(shared: &Arc<Shared>, dir: &Path, control: &str, files: &[String]) {
    let Some(claimed) = claim(dir, control) else { return };
    take_claimed(shared, dir, control, files).await;
    let _ = std::fs::remove_file(claimed);
}

async fn take_claimed(shared: &Arc<Shared>, dir: &Path, control: &str, files: &[String]) {
    let caller = Caller::system("incoming");
    let mut staging = match begin(shared, &caller) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(upload = %control, error = %e, "cannot stage an upload from the incoming directory");
            return;
        }
    };
    // Copied, not moved: the uploader's files (which they may still hold
    // open or linked elsewhere) are read once into the master's own; the
    // originals go only once the upload is accepted or rejected, so an
    // internal error leaves them for the next look.
    let names: Vec<&str> = std::iter::once(control).chain(files.iter().map(String::as_str)).collect();
    for name in &names {
        let copied = staging
            .file(name)
            .map_err(|e| e.to_string())
            .and_then(|dest| copy_plain(&dir.join(name), &dest).map_err(|e| format!("cannot read {name}: {e}")));
        if let Err(e) = copied {
            tracing::error!(upload = %control, error = %e, "cannot take an upload from the incoming directory");
            return;
        }
    }
    let uploader = staging.file_path(control).and_then(|p| read_plain(&p, MAX_CONTROL)).and_then(|t| uploader(&t));
    let remove_originals = || {
        for name in &names {
            if let Err(e) = std::fs::remove_file(dir.join(name)) {
                tracing::warn!(file = %name, error = %e, "cannot remove a taken upload's file from incoming");
            }
        }
    };
    let (subject, body, signer) = match accept(shared, &caller, staging, UploadChoice::default()).await {
        Ok(a) => {
            let builds: Vec<String> = a
                .created
                .builds
                .iter()
                .map(|b| {
                    format!(
                        "  build {} on {}: {}/builds/{}",
                        b.id,
                        b.target,
                        shared.farm().cfg.master.public_url(),
                        b.id
                    )
                })
                .collect();
            tracing::info!(upload = %control, source = %a.source, version = %a.version, builds = builds.len(), "upload taken from the incoming directory");
            remove_originals();
            (
                format!("kiln: {} {} accepted", a.source, a.version),
                format!("{control} was accepted from the incoming directory.\n\n{}\n", builds.join("\n")),
                a.signer,
            )
        }
        Err(OpError::Rejected(why)) => {
            remove_originals();
            (
                format!("kiln: {control} rejected"),
                format!("{control} was rejected from the incoming directory: {why}\n"),
                None,
            )
        }
        Err(e) => {
            // Left in place: taken again at the next look.
            tracing::error!(upload = %control, error = %e, "an upload from the incoming directory failed; it stays there");
            return;
        }
    };
    let farm = shared.farm();
    let Some(smtp) = farm.cfg.smtp.clone() else { return };
    let mut to: Vec<String> = signer.or(uploader).into_iter().collect();
    to.extend(farm.cfg.uploads.mail.iter().cloned());
    drop(farm);
    crate::reporters::mail::deliver(shared, "incoming", &smtp, &to, &subject, body).await;
}
