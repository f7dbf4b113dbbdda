//! Preparing packages for a channel: placing a build's files (or a
//! promotion's) in the channel's pool, signing what the channel signs, and
//! the rows the database will record; a version already published with
//! other contents is refused unless replacing.

use crate::clock::now_us;
use crate::events::RepoRefusal;
use kiln_core::channel::{placement, Held, Placement};
use kiln_core::config::{Channel, Family, Target};
use kiln_core::job::is_package;
use kiln_db::PackageRow;
use kiln_repo::deb::DscEntry;
use kiln_repo::hash::file_sums;
use kiln_repo::key::SigningKey;
use kiln_repo::publish::{place_file, ChannelDir};
use kiln_repo::yum::RpmEntry;
use std::path::{Path, PathBuf};

/// A build's packages prepared for one channel.
pub(super) struct Prepared {
    pub add: Vec<PackageRow>,
    pub remove: Vec<i64>,
}

/// The `repo` column of a target's packages.
fn repo_of(target: &Target) -> String {
    match target.family {
        Family::Deb => format!("apt:{}", target.suite.as_deref().unwrap_or("unstable")),
        Family::Rpm => format!("yum:{}", target.name),
    }
}

fn identity(p: &PackageRow) -> (&str, &str, &str, &str, &str) {
    (&p.repo, &p.kind, &p.name, &p.version, &p.arch)
}

/// What publishing `new` into `channel` does, given the channel's rows
/// ([`kiln_core::channel::placement`]): `None` when it is there already,
/// `Some(replaced row)` when it goes in, or why it is refused.
fn resolve_conflict(
    new: &PackageRow,
    existing: &[PackageRow],
    channel: &str,
    replace: bool,
) -> Result<Option<Option<i64>>, String> {
    let held = existing.iter().find(|e| identity(e) == identity(new)).map(|old| Held {
        id: old.id,
        build_id: old.build_id,
        sha256: &old.sha256,
    });
    match placement(held, new.build_id, &new.sha256, replace) {
        Placement::Add => Ok(Some(None)),
        Placement::Present => Ok(None),
        Placement::Replace(old) => Ok(Some(Some(old))),
        Placement::Refused => Err(format!(
            "{} {} ({}) is already published in {channel} with different contents; a version is published once: \
             raise the version, or rebuild with --replace to overwrite it",
            new.name, new.version, new.arch
        )),
    }
}

/// The pool path for `file_name` under `dir` (relative to the channel
/// directory): the conventional place, or, when a different file already has
/// that name (a replacement), a subdirectory named by content, so the file
/// the served index names is never overwritten.
fn pool_path(channel_root: &Path, dir: &str, file_name: &str, sha256: &str) -> String {
    let plain = format!("{dir}/{file_name}");
    match file_sums(&channel_root.join(&plain)) {
        Ok(s) if s.sha256 != sha256 => format!("{dir}/{}/{file_name}", &sha256[..16]),
        _ => plain,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn prepare(
    dir: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    target: &Target,
    build_id: i64,
    files: &[(String, PathBuf)],
    existing: &[PackageRow],
    replace: bool,
) -> Result<Prepared, RepoRefusal> {
    let repo = repo_of(target);
    let now = now_us();
    let mut rows: Vec<(PackageRow, PathBuf)> = Vec::new();
    let root = dir.root().to_path_buf();
    for (name, path) in files {
        // Errors name the artifact, not where the artifact store keeps it.
        let err = |e: kiln_repo::RepoError| e.to_string().replace(&path.display().to_string(), name);
        let row =
            |kind: &str, n: &str, v: &str, a: &str, file: String, sha: &str, size: u64, entry: String| PackageRow {
                id: 0,
                channel: ch.name.clone(),
                repo: repo.clone(),
                kind: kind.into(),
                name: n.into(),
                version: v.into(),
                arch: a.into(),
                file,
                sha256: sha.into(),
                size: size as i64,
                build_id: Some(build_id),
                entry,
                published_at: now,
            };
        match target.family {
            Family::Deb if is_package(name) && (name.ends_with(".deb") || name.ends_with(".udeb")) => {
                // A channel that signs .debs gets a signed copy.
                let signed = root.join("pool/.incoming").join(format!("{build_id}-{name}"));
                let path = if ch.sign_debs {
                    kiln_repo::debsig::sign_deb(path, &signed, key).map_err(err)?;
                    &signed
                } else {
                    path
                };
                let sums = file_sums(path).map_err(err)?;
                let control = kiln_repo::deb::read_control(path).map_err(err)?;
                let bad = |reason: String| format!("{name}: {reason}");
                // The pool directory depends on the source package the control file names.
                let source = kiln_repo::deb::entry_from_control(&control, "", &sums).map_err(bad)?.source;
                let pool = kiln_repo::deb::pool_dir(&ch.component, &source);
                let rel = pool_path(&root.join("pool/apt"), pool.trim_start_matches("pool/"), name, &sums.sha256);
                let e = kiln_repo::deb::entry_from_control(&control, &format!("pool/{rel}"), &sums).map_err(bad)?;
                let entry = serde_json::to_string(&e).map_err(|e| e.to_string())?;
                rows.push((
                    row("deb", &e.name, &e.version, &e.arch, format!("pool/apt/{rel}"), &sums.sha256, sums.size, entry),
                    path.to_path_buf(),
                ));
            }
            Family::Deb if is_package(name) && name.ends_with(".dsc") => {
                let sums = file_sums(path).map_err(err)?;
                let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
                let upload = kiln_core::deb822::parse_source_upload(&text).map_err(|e| format!("{name}: {e}"))?;
                let pool = kiln_repo::deb::pool_dir(&ch.component, &upload.source);
                let e = kiln_repo::deb::inspect_dsc(path, name, &pool, &sums).map_err(err)?;
                // The files a .dsc lists travel with it.
                for f in &e.files {
                    let (_, p) = files
                        .iter()
                        .find(|(n, _)| n == f)
                        .ok_or(format!("{name} lists {f}, which the build did not upload"))?;
                    let dest = dir.apt_pool_file(&format!("{pool}/{f}")).map_err(err)?;
                    make_room(&dest, p, replace, name, f)?;
                    place_file(p, &dest).map_err(err)?;
                }
                let entry = serde_json::to_string(&e).map_err(|e| e.to_string())?;
                let rel = format!("{}/{name}", pool.trim_start_matches("pool/"));
                let dest = dir.file(&format!("pool/apt/{rel}")).map_err(err)?;
                make_room(&dest, path, replace, name, name)?;
                rows.push((
                    row(
                        "dsc",
                        &e.name,
                        &e.version,
                        "source",
                        format!("pool/apt/{rel}"),
                        &sums.sha256,
                        sums.size,
                        entry,
                    ),
                    path.clone(),
                ));
            }
            Family::Rpm if is_package(name) && name.ends_with(".rpm") => {
                let signed = sign_rpm_for_pool(&root, &target.name, path, name, key)?;
                let e = &signed.entry;
                let entry = serde_json::to_string(e).map_err(|e| e.to_string())?;
                let mut r =
                    row("rpm", &e.name, &evr(e), &e.arch, signed.file, &signed.sums.sha256, signed.sums.size, entry);
                r.repo = format!("yum:{}", signed.repository);
                rows.push((r, signed.staged));
            }
            _ => {}
        }
    }
    let err = |e: kiln_repo::RepoError| e.to_string();
    let mut out = Prepared { add: Vec::new(), remove: Vec::new() };
    for (row, src) in rows {
        match resolve_conflict(&row, existing, &ch.name, replace).map_err(RepoRefusal::Conflict)? {
            None => {}
            Some(replaced) => {
                kiln_repo::publish::place_file(&src, &dir.file(&row.file).map_err(err)?).map_err(err)?;
                out.remove.extend(replaced);
                out.add.push(row);
            }
        }
    }
    let _ = std::fs::remove_dir_all(root.join("pool/.incoming"));
    Ok(out)
}

/// A source's files live at fixed pool names. One already there with other
/// bytes (left by another build, or by a publish that was refused) is never
/// served in place of `src`: the publish is refused, unless it replaces,
/// when the old file goes.
fn make_room(dest: &Path, src: &Path, replace: bool, what: &str, file: &str) -> Result<(), RepoRefusal> {
    let err = |e: kiln_repo::RepoError| RepoRefusal::Failed(e.to_string());
    let sha256 = |p: &Path| kiln_repo::hash::file_sha256(p).map(|(_, sha256)| sha256);
    if !dest.exists() || sha256(dest).map_err(err)? == sha256(src).map_err(err)? {
        return Ok(());
    }
    if !replace {
        return Err(RepoRefusal::Conflict(format!(
            "{what}: the pool already holds a different {file}; a source's files are published once per version \
             (rebuild with --replace to overwrite them)"
        )));
    }
    std::fs::remove_file(dest).map_err(|e| RepoRefusal::Failed(format!("{}: {e}", dest.display())))
}

/// An RPM signed with a channel's key, staged in the channel's
/// `pool/.incoming`, with the pool file it becomes (relative to the channel
/// directory) and its index entry.
struct SignedRpm {
    /// The target's repository or, for debug information, its debuginfo one.
    repository: String,
    staged: PathBuf,
    file: String,
    sums: kiln_repo::hash::Sums,
    entry: RpmEntry,
}

/// Signs `src` (named `name`) for the pool of `target`'s repository (or
/// its debuginfo repository, by the package's name in its header) in the
/// channel at `channel_root`. Used when a build publishes and when a
/// promotion re-signs.
fn sign_rpm_for_pool(
    channel_root: &Path,
    target: &str,
    src: &Path,
    name: &str,
    key: &SigningKey,
) -> Result<SignedRpm, String> {
    let err = |e: kiln_repo::RepoError| e.to_string().replace(&src.display().to_string(), name);
    let staged = channel_root.join("pool/.incoming").join(name);
    kiln_repo::rpmsign::sign_rpm(src, &staged, key).map_err(err)?;
    let sums = file_sums(&staged).map_err(err)?;
    // The header names the package; the pool it goes to follows from that.
    let header = kiln_repo::yum::inspect_rpm(&staged, name, &sums.sha256, sums.size, now_s()).map_err(err)?;
    let repository = kiln_core::debuginfo::yum_repository_for(target, &header.name);
    let rel = pool_path(&channel_root.join("pool/yum").join(&repository), ".", name, &sums.sha256);
    let rel = rel.trim_start_matches("./").to_string();
    let entry = kiln_repo::yum::inspect_rpm(&staged, &format!("Packages/{rel}"), &sums.sha256, sums.size, now_s())
        .map_err(err)?;
    Ok(SignedRpm { file: format!("pool/yum/{repository}/{rel}"), repository, staged, sums, entry })
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An RPM's version as users write it: `[epoch:]version-release`.
fn evr(e: &RpmEntry) -> String {
    if e.epoch > 0 {
        format!("{}:{}-{}", e.epoch, e.version, e.release)
    } else {
        format!("{}-{}", e.version, e.release)
    }
}

/// Copies rows from one channel to another: the same pool files for APT,
/// re-signed with the target channel's key for RPM.
pub(super) fn promote(
    src: &ChannelDir,
    dst: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    picked: &[PackageRow],
    existing: &[PackageRow],
    replace: bool,
) -> Result<Prepared, RepoRefusal> {
    let mut out = Prepared { add: Vec::new(), remove: Vec::new() };
    let now = now_us();
    for p in picked {
        let row = PackageRow { id: 0, channel: ch.name.clone(), published_at: now, ..p.clone() };
        let replaced = match resolve_conflict(&row, existing, &ch.name, replace).map_err(RepoRefusal::Conflict)? {
            None => continue,
            Some(r) => r,
        };
        out.add.push(place_row(src, dst, ch, key, row, replace)?);
        out.remove.extend(replaced);
    }
    Ok(out)
}

/// Signs channel `ch`'s RPMs (and its `.deb`s, when it signs them) in
/// `rows` again with `key`, each beside the file it replaces: after a key
/// rotation. The rows keep when they were published.
pub(super) fn resign(
    dir: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    rows: &[PackageRow],
) -> Result<Prepared, RepoRefusal> {
    let mut out = Prepared { add: Vec::new(), remove: Vec::new() };
    for p in rows.iter().filter(|p| p.kind == "rpm" || (p.kind == "deb" && ch.sign_debs)) {
        let row = PackageRow { id: 0, ..p.clone() };
        out.add.push(place_row(dir, dir, ch, key, row, true)?);
        out.remove.push(p.id);
    }
    Ok(out)
}

/// Places `row`'s file (read from `src`) in `dst`'s pool as channel `ch`
/// serves it: RPMs (and `.deb`s of a channel that signs them) signed with
/// `key` under a new pool path, other files as they are; returns the row
/// naming what was placed.
fn place_row(
    src: &ChannelDir,
    dst: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    mut row: PackageRow,
    replace: bool,
) -> Result<PackageRow, RepoRefusal> {
    let err = |e: kiln_repo::RepoError| e.to_string();
    let from = src.file(&row.file).map_err(|e| e.to_string())?;
    let name = Path::new(&row.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match row.kind.as_str() {
        "rpm" => {
            // The target the row's repository belongs to: its own, or the one its debuginfo repository is of.
            let repository = row.repo.trim_start_matches("yum:");
            let target = repository
                .strip_suffix(kiln_core::debuginfo::DEBUGINFO_SUFFIX)
                .filter(|_| kiln_core::debuginfo::is_debuginfo_rpm(&row.name))
                .unwrap_or(repository);
            let signed = sign_rpm_for_pool(dst.root(), target, &from, &name, key)?;
            row.entry = serde_json::to_string(&signed.entry).map_err(|e| e.to_string())?;
            row.file = signed.file;
            row.sha256 = signed.sums.sha256;
            row.size = signed.sums.size as i64;
            place_file(&signed.staged, &dst.file(&row.file).map_err(err)?).map_err(err)?;
            let _ = std::fs::remove_dir_all(dst.root().join("pool/.incoming"));
        }
        "dsc" => {
            let e: DscEntry = serde_json::from_str(&row.entry).map_err(|e| e.to_string())?;
            let parent = Path::new(&row.file).parent().map(Path::to_path_buf).unwrap_or_default();
            for f in &e.files {
                let rel = format!("{}/{f}", parent.display());
                let (from_file, to_file) = (src.file(&rel).map_err(err)?, dst.file(&rel).map_err(err)?);
                make_room(&to_file, &from_file, replace, &row.name, f)?;
                place_file(&from_file, &to_file).map_err(err)?;
            }
            make_room(&dst.file(&row.file).map_err(err)?, &from, replace, &row.name, &row.name)?;
            place_file(&from, &dst.file(&row.file).map_err(err)?).map_err(err)?;
        }
        "deb" if ch.sign_debs => {
            // Signed by the channel it enters; a new pool path, as its bytes change.
            let staging = dst.root().join("pool/.incoming");
            let signed = staging.join(&name);
            kiln_repo::debsig::sign_deb(&from, &signed, key).map_err(err)?;
            let sums = file_sums(&signed).map_err(err)?;
            let rel = row.file.trim_start_matches("pool/apt/");
            let (dir, _) = rel.rsplit_once('/').unwrap_or((".", rel));
            // A file signed before sits in a content-named subdirectory
            // (see `pool_path`): its replacement goes beside, not below it.
            let dir = match dir.rsplit_once('/') {
                Some((parent, last)) if last.len() == 16 && last.bytes().all(|b| b.is_ascii_hexdigit()) => parent,
                _ => dir,
            };
            let rel = pool_path(&dst.root().join("pool/apt"), dir, &name, &sums.sha256);
            let control = kiln_repo::deb::read_control(&signed).map_err(err)?;
            let e = kiln_repo::deb::entry_from_control(&control, &format!("pool/{rel}"), &sums)
                .map_err(|e| format!("{name}: {e}"))?;
            row.entry = serde_json::to_string(&e).map_err(|e| e.to_string())?;
            row.file = format!("pool/apt/{rel}");
            row.sha256 = sums.sha256;
            row.size = sums.size as i64;
            place_file(&signed, &dst.file(&row.file).map_err(err)?).map_err(err)?;
            let _ = std::fs::remove_dir_all(&staging);
        }
        _ => place_file(&from, &dst.file(&row.file).map_err(err)?).map_err(err)?,
    }
    Ok(row)
}
