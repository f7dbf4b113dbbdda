//! Source uploads (the Maemo "drop" flow): a `.changes`, `.dsc` or
//! `.src.rpm` with its files arrives through the API, is checked against
//! the sizes and checksums its control file lists, and becomes builds of
//! that source on the chosen targets. When the farm has an uploaders
//! keyring, a signed `.changes` or `.dsc` is checked against it first (the
//! policy is the upload operation's) and the text that was signed is what
//! gets checked here. A rejected upload is kept under
//! `DATA_DIR/rejected/` with a name that is always new and a `REASON` file;
//! an accepted one under `DATA_DIR/uploads/<id>/`, where builds take it from.

use kiln_core::deb822::{parse_source_upload, SourceUpload};
use kiln_core::names::valid_artifact_name;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    Changes,
    Dsc,
    SrcRpm,
}

impl UploadKind {
    /// The file name suffix of this kind's control file.
    pub fn suffix(self) -> &'static str {
        match self {
            UploadKind::Changes => ".changes",
            UploadKind::Dsc => ".dsc",
            UploadKind::SrcRpm => ".src.rpm",
        }
    }
}

/// What an accepted upload is.
#[derive(Debug, Clone)]
pub struct Checked {
    pub kind: UploadKind,
    pub source: String,
    pub version: String,
}

/// The control file of an upload: the `.changes`, else the `.dsc`, else
/// the `.src.rpm`.
#[derive(Debug, Clone)]
pub struct Control {
    pub kind: UploadKind,
    /// Its file name.
    pub name: String,
    /// The text of a `.changes` or `.dsc`: as uploaded, or once its
    /// signature is verified, the text that was signed. None for a `.src.rpm`.
    pub text: Option<String>,
}

/// Finds the control file among the uploaded names and reads it.
pub fn read_control(dir: &Path, names: &[String]) -> Result<Control, Vec<String>> {
    let pick = |suffix: &str| names.iter().filter(|n| n.ends_with(suffix)).collect::<Vec<_>>();
    let (changes, dsc, srpm) = (pick(".changes"), pick(".dsc"), pick(".src.rpm"));
    let (kind, name) = match (changes.as_slice(), dsc.as_slice(), srpm.as_slice()) {
        ([c], _, _) => (UploadKind::Changes, (*c).clone()),
        ([], [d], _) => (UploadKind::Dsc, (*d).clone()),
        ([], [], [r]) => (UploadKind::SrcRpm, (*r).clone()),
        ([], [], []) => return Err(vec!["the upload has no .changes, .dsc or .src.rpm".into()]),
        _ => return Err(vec!["the upload has more than one control file (.changes, .dsc or .src.rpm)".into()]),
    };
    if kind == UploadKind::SrcRpm {
        return Ok(Control { kind, name, text: None });
    }
    match fs::read(dir.join(&name)) {
        Ok(b) => Ok(Control { kind, name, text: Some(String::from_utf8_lossy(&b).into_owned()) }),
        Err(e) => Err(vec![format!("{name}: cannot read: {e}")]),
    }
}

/// The files in `dir` besides `control` and `listed`, each as a problem:
/// nothing rides along with an upload that its control file (its checksums,
/// and a signature over them) does not cover.
fn unlisted(dir: &Path, control: &str, listed: &[&str]) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut extra: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != control && !listed.contains(&n.as_str()))
        .collect();
    extra.sort();
    extra.into_iter().map(|n| format!("{n} is not listed in {control}")).collect()
}

/// Checks every file `control` lists. Returns every problem found, not
/// just the first.
pub fn check(dir: &Path, control: &Control) -> Result<Checked, Vec<String>> {
    let (kind, control_name) = (control.kind, &control.name);
    let Some(text) = &control.text else {
        // A source RPM is the whole upload.
        let extra = unlisted(dir, control_name, &[]);
        if !extra.is_empty() {
            return Err(extra);
        }
        // name-version-release.src.rpm
        let stem = control_name.trim_end_matches(".src.rpm");
        let mut parts = stem.rsplitn(3, '-');
        let (release, version, name) = (parts.next(), parts.next(), parts.next());
        return match (name, version, release) {
            (Some(n), Some(v), Some(r)) if !n.is_empty() => {
                Ok(Checked { kind, source: n.to_string(), version: format!("{v}-{r}") })
            }
            _ => Err(vec![format!("{control_name}: expected a name of the form NAME-VERSION-RELEASE.src.rpm")]),
        };
    };
    let control = control_name;
    let upload: SourceUpload =
        parse_source_upload(text).map_err(|e| vec![format!("{control}: malformed control file: {e}")])?;
    let mut problems = Vec::new();
    // A .changes lists the .dsc, which lists the source's files (with
    // `dpkg-genchanges -sd` the orig tarball only there): those may come too,
    // covered by the .dsc's checksums, which the .changes covers.
    let mut listed: Vec<String> = upload.files.iter().map(|f| f.name.clone()).collect();
    if kind == UploadKind::Changes {
        for dsc in upload.files.iter().filter(|f| f.name.ends_with(".dsc")) {
            let text = fs::read_to_string(dir.join(&dsc.name)).unwrap_or_default();
            if let Ok(source) = parse_source_upload(&text) {
                listed.extend(source.files.into_iter().map(|f| f.name));
            }
        }
    }
    problems.extend(unlisted(dir, control, &listed.iter().map(String::as_str).collect::<Vec<_>>()));
    for f in &upload.files {
        let path = dir.join(&f.name);
        if !path.exists() {
            problems.push(format!("missing file {} (listed in {control})", f.name));
            continue;
        }
        let kiln_repo::hash::Sums { size, md5, sha1, sha256 } = match kiln_repo::hash::file_sums(&path) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{}: cannot read: {e}", f.name));
                continue;
            }
        };
        if size != f.size {
            problems.push(format!("{}: size mismatch: {control} says {} bytes, the file has {size}", f.name, f.size));
            continue;
        }
        for (algo, want, got) in [("SHA256", &f.sha256, &sha256), ("SHA1", &f.sha1, &sha1), ("MD5", &f.md5, &md5)] {
            if let Some(want) = want {
                if want != got {
                    problems.push(format!(
                        "{}: {algo} checksum mismatch: {control} says {want}, the file has {got}",
                        f.name
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(Checked { kind, source: upload.source, version: upload.version })
    } else {
        Err(problems)
    }
}

/// A new directory under `parent` named `stem` or `stem.N`; never one that
/// exists already (a rejected upload whose name was seen before must not
/// clash with it).
pub fn fresh_dir(parent: &Path, stem: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(parent)?;
    for n in 0..10_000u32 {
        let name = if n == 0 { stem.to_string() } else { format!("{stem}.{n}") };
        let path = parent.join(name);
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!("no free name for {stem} under {}", parent.display())))
}

/// Moves a rejected upload's files into `DATA_DIR/rejected/` with its reason.
pub fn reject(data_dir: &Path, staging: &Path, stem: &str, reasons: &[String]) -> io::Result<PathBuf> {
    let dest = fresh_dir(&data_dir.join("rejected"), stem)?;
    for e in fs::read_dir(staging)?.flatten() {
        fs::rename(e.path(), dest.join(e.file_name()))?;
    }
    fs::write(dest.join("REASON"), reasons.join("\n") + "\n")?;
    fs::remove_dir(staging)?;
    Ok(dest)
}

/// Opens `path` for reading only when it is itself a plain file: never
/// through a link, never a FIFO or a device (which could block or never
/// end). What is read from it afterwards is this file, whatever happens to
/// the name.
pub fn open_plain(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!("{} is not a plain file", path.display())));
    }
    Ok(f)
}

/// Reads at most `limit` bytes of a plain file (see [`open_plain`]);
/// `None` for anything else or anything longer.
pub fn read_plain(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_plain(path).ok()?.take(limit + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

/// Copies the plain file `from` into a new file `to` that the master owns,
/// synced: someone else's file (an uploader's, who may still hold it open
/// or linked) is read once and never becomes one of the master's.
pub fn copy_plain(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = open_plain(from)?;
    let mut dst = fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_all()
}

/// Moves one file that belongs to no upload (a stray in the incoming
/// directory) into `DATA_DIR/rejected/` with the reason.
pub fn reject_file(data_dir: &Path, file: &Path, reason: &str) -> io::Result<PathBuf> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "stray".into());
    let dest = fresh_dir(&data_dir.join("rejected"), &name)?;
    let kept = copy_plain(file, &dest.join(&name)).and_then(|()| fs::write(dest.join("REASON"), format!("{reason}\n")));
    if let Err(e) = kept {
        let _ = fs::remove_dir_all(&dest);
        return Err(e);
    }
    fs::remove_file(file)?;
    Ok(dest)
}

/// Where an accepted upload is kept (its builds take their source from there).
pub fn kept_dir(data_dir: &Path, upload_id: &str) -> PathBuf {
    data_dir.join("uploads").join(upload_id)
}

/// Who asked for the builds of a signed upload: the signer's user id, and
/// the caller that carried it in (who may cancel them: [`uploaded_via`]).
pub fn signed_requester(user_id: &str, caller: &str) -> String {
    format!("{user_id} (signed upload, via {caller})")
}

/// The caller a [`signed_requester`] names. It is the text after the last
/// marker: caller names (emails, `admin`) have no spaces, so a user id that
/// holds the marker itself cannot move it.
pub fn uploaded_via(requested_by: &str) -> Option<&str> {
    let (_, via) = requested_by.strip_suffix(')')?.rsplit_once(" (signed upload, via ")?;
    (!via.is_empty() && !via.contains(char::is_whitespace)).then_some(via)
}

/// Whether `name` may be stored for an upload.
pub fn valid_upload_name(name: &str) -> bool {
    valid_artifact_name(name) && name != "REASON"
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Md5;
    use sha2::{Digest, Sha256};

    #[test]
    fn checks_listed_files_and_names_every_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("x_1.0.tar.xz"), b"hello").expect("write");
        fs::write(dir.path().join("x_1.0.debian.tar.xz"), b"other").expect("write");
        let sha = hex::encode(Sha256::digest(b"hello"));
        let md5 = hex::encode(Md5::digest(b"hello"));
        let dsc = format!(
            "Source: xy\nVersion: 1.0-1\nChecksums-Sha256:\n {sha} 5 x_1.0.tar.xz\n {sha} 5 x_1.0.debian.tar.xz\nFiles:\n {md5} 5 x_1.0.tar.xz\n {md5} 5 x_1.0.debian.tar.xz\n {md5} 5 x_1.0.orig.tar.gz\n"
        );
        fs::write(dir.path().join("x_1.0-1.dsc"), dsc).expect("write");
        let names: Vec<String> = ["x_1.0-1.dsc", "x_1.0.tar.xz", "x_1.0.debian.tar.xz"].map(String::from).to_vec();
        let read_and_check = |names: &[String]| check(dir.path(), &read_control(dir.path(), names)?);
        let problems = read_and_check(&names).expect_err("problems");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("x_1.0.debian.tar.xz: SHA256 checksum mismatch"), "{problems:?}");
        assert!(problems[1].starts_with("x_1.0.debian.tar.xz: MD5 checksum mismatch"), "{problems:?}");
        assert_eq!(problems[2], "missing file x_1.0.orig.tar.gz (listed in x_1.0-1.dsc)");
        // A file the control file does not list does not ride along.
        fs::write(dir.path().join("extra.tar.gz"), b"unlisted").expect("write");
        let problems = read_and_check(&names).expect_err("problems");
        assert!(problems.contains(&"extra.tar.gz is not listed in x_1.0-1.dsc".to_string()), "{problems:?}");
        fs::remove_file(dir.path().join("extra.tar.gz")).expect("remove");
        let alone = tempfile::tempdir().expect("tempdir");
        let srpm = ["x-2.1-3.src.rpm".to_string()];
        let ok = check(alone.path(), &read_control(alone.path(), &srpm).expect("control")).expect("srpm");
        assert_eq!((ok.source.as_str(), ok.version.as_str()), ("x", "2.1-3"));
        // Anything beside a source RPM is refused (a spec there would be built instead).
        fs::write(alone.path().join("evil.spec"), b"Name: evil").expect("write");
        let problems = check(alone.path(), &read_control(alone.path(), &srpm).expect("control")).expect_err("extra");
        assert_eq!(problems, ["evil.spec is not listed in x-2.1-3.src.rpm"]);
        assert!(read_and_check(&["a.tar".into()]).is_err());
    }

    #[test]
    fn a_signed_requester_names_the_caller_it_came_through() {
        let by = signed_requester("Jane Doe <jane@example.org>", "ann@example.org");
        assert_eq!(by, "Jane Doe <jane@example.org> (signed upload, via ann@example.org)");
        assert_eq!(uploaded_via(&by), Some("ann@example.org"));
        // A user id that holds the marker names nobody else.
        let sly = signed_requester("x (signed upload, via carl@example.org)", "ann@example.org");
        assert_eq!(uploaded_via(&sly), Some("ann@example.org"));
        assert_eq!(uploaded_via("ann <ann@example.org> (github)"), None);
        assert_eq!(uploaded_via("x (signed upload, via carl@example.org) (github)"), None);
        assert_eq!(uploaded_via("ann@example.org"), None);
    }

    #[test]
    fn rejected_names_never_clash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = fresh_dir(dir.path(), "x_1.0").expect("first");
        let b = fresh_dir(dir.path(), "x_1.0").expect("second");
        assert_ne!(a, b);
        assert!(b.ends_with("x_1.0.1"));
    }
}
