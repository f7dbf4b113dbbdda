//! The rpm helpers of the standard pipeline: the source RPM from a spec
//! (read and run in the sandbox) or the tree's `.src.rpm`, and the binary
//! RPMs from it (rpmbuild in bubblewrap, mock, or on the host).

use super::*;

fn srpm_version(srpm: &Path) -> anyhow::Result<String> {
    let out = Command::new("rpm")
        .args(["-qp", "--nosignature", "--qf", "%{VERSION}-%{RELEASE}"])
        .arg(srpm)
        .output()
        .context("cannot run rpm")?;
    if !out.status.success() {
        bail!("rpm -qp {} failed: {}", srpm.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `rpm-source`: makes the source RPM in SCRATCH/rpm from the spec (the
/// sources beside it) or takes the `.src.rpm` in the tree; prints
/// VERSION-RELEASE. Nightly builds get `~nightlyDATE.BUILD` in the release.
/// Runs in the build's sandbox: a spec's `%( )` runs when rpmspec reads it.
pub fn rpm_source(spec: Option<&str>) -> anyhow::Result<()> {
    let build_dir = env_path("KILN_BUILD_DIR")?;
    let rpm = env_path("KILN_SCRATCH")?.join("rpm");
    fs::create_dir_all(&rpm)?;
    if crate::sandbox::rerun_in_sandbox(&build_dir, &[&rpm])? {
        return Ok(());
    }
    let spec_path = match spec {
        Some(s) => Some(build_dir.join(s)),
        None => find_one(&build_dir, ".spec")?,
    };
    let srpm = match spec_path {
        Some(spec_path) => {
            let rel = spec_path.strip_prefix(&build_dir).unwrap_or(&spec_path).to_path_buf();
            let text = crate::sandbox::read_in_tree(&build_dir, &rel)?;
            let text = match nightly_stamp()? {
                Some((date, id)) => {
                    kiln_core::rpmspec::rewrite_release(&text, |r| kiln_core::rpmspec::nightly_release(r, &date, id))
                        .map_err(anyhow::Error::msg)?
                }
                None => text,
            };
            let name = spec_path.file_name().context("spec path")?;
            let edited = rpm.join(name);
            fs::write(&edited, text)?;
            // The files beside the spec; then the ones it names that are not
            // there, from the top of the tree (the `_sourcedir = tree`
            // layout: `rpm/NAME.spec`, its sources at the top); then the
            // tarballs it names that are nowhere, made from the tree
            // (`Source0: %{name}-%{version}.tar.gz`).
            let sources = rpm.join("sources");
            fs::create_dir_all(&sources)?;
            for e in fs::read_dir(spec_path.parent().unwrap_or(&build_dir))?.flatten() {
                if e.file_type()?.is_file() {
                    fs::copy(e.path(), sources.join(e.file_name()))?;
                }
            }
            tarballs_from_tree(&edited, &build_dir, &sources)?;
            let top = rpm.join("srpm-top");
            let mut cmd = Command::new("rpmbuild");
            cmd.arg("-bs")
                .arg("--define")
                .arg(format!("_topdir {}", top.display()))
                .arg("--define")
                .arg(format!("_sourcedir {}", sources.display()))
                .arg(&edited);
            run(&mut cmd, "rpmbuild -bs")?;
            let made = find_one(&top.join("SRPMS"), ".src.rpm")?.context("rpmbuild -bs made no source RPM")?;
            let dest = rpm.join(made.file_name().context("srpm name")?);
            fs::rename(&made, &dest)?;
            fs::remove_dir_all(&top)?;
            fs::remove_dir_all(&sources)?;
            fs::remove_file(&edited)?;
            dest
        }
        None => {
            let found = find_one(&build_dir, ".src.rpm")?.context("the source has neither a .spec nor a .src.rpm")?;
            let dest = rpm.join(found.file_name().context("srpm name")?);
            fs::copy(&found, &dest)?;
            dest
        }
    };
    println!("{}", srpm_version(&srpm)?);
    Ok(())
}

/// Copies each file the spec names but `sources` lacks from the top of the
/// tree, and makes each tarball still missing from the source tree, the way
/// `git archive` would: the tree (without `.git` and
/// kiln's output) under the directory `%setup` expects.
fn tarballs_from_tree(spec: &Path, tree: &Path, sources: &Path) -> anyhow::Result<()> {
    let parsed = Command::new("rpmspec")
        .arg("-P")
        .arg("--define")
        .arg(format!("_sourcedir {}", sources.display()))
        .arg(spec)
        .output()
        .context("cannot run rpmspec")?;
    if !parsed.status.success() {
        bail!("rpmspec -P {} failed: {}", spec.display(), String::from_utf8_lossy(&parsed.stderr).trim());
    }
    let parsed = String::from_utf8_lossy(&parsed.stdout);
    for file in kiln_core::rpmspec::source_files(&parsed) {
        let at_top = tree.join(&file);
        let plain = !file.contains('/') && !file.starts_with('.');
        if plain && !sources.join(&file).exists() && at_top.symlink_metadata().is_ok_and(|m| m.is_file()) {
            eprintln!("kiln: {file} from the top of the source tree");
            fs::copy(&at_top, sources.join(&file))?;
        }
    }
    let missing: Vec<String> = kiln_core::rpmspec::source_files(&parsed)
        .into_iter()
        .filter(|f| kiln_core::rpmspec::is_tarball(f) && !sources.join(f).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let nv = Command::new("rpmspec")
        .args(["-q", "--srpm", "--qf", "%{NAME}-%{VERSION}"])
        .arg(spec)
        .output()
        .context("cannot run rpmspec")?;
    let default_dir = String::from_utf8_lossy(&nv.stdout).trim().to_string();
    let dir = kiln_core::rpmspec::setup_dir(&parsed).unwrap_or(default_dir);
    if dir.is_empty() || !dir.chars().all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c)) {
        bail!("cannot tell which directory %setup expects the sources in (got {dir:?}); name it with `%setup -n`");
    }
    for file in missing {
        eprintln!("kiln: making {file} from the source tree (top directory {dir}/)");
        // Written under a prefixed name, then renamed; `-a` picks the
        // compression by the name's suffix, which the prefix keeps.
        let part = sources.join(format!(".partial-{file}"));
        let status = Command::new("tar")
            .arg("-C")
            .arg(tree)
            .args(["--exclude=./.git", "--exclude=./.kiln-out", "--sort=name", "--owner=0", "--group=0"])
            .arg("--numeric-owner")
            .arg(format!("--transform=s,^\\.,{dir},S"))
            .arg("-caf")
            .arg(&part)
            .arg(".")
            .status()
            .context("cannot run tar")?;
        if !status.success() {
            let _ = fs::remove_file(&part);
            bail!("making {file} from the source tree failed ({status})");
        }
        fs::rename(&part, sources.join(&file))?;
    }
    Ok(())
}

/// `rpm-build`: rebuilds the source RPM (in bubblewrap over the host,
/// read-only, without network, as an unprivileged user; with mock in a
/// root of its own; or on the host) and puts the RPMs in `.kiln-out/`.
/// `keep`: the component's own `artifacts_on_failure`, kept with the
/// default logs from rpmbuild's `BUILD` dir when the build fails.
pub fn rpm_build(executor: &str, mock_config: Option<&str>, keep: &[String]) -> anyhow::Result<()> {
    let build_dir = env_path("KILN_BUILD_DIR")?;
    let rpm = env_path("KILN_SCRATCH")?.join("rpm");
    let srpm = find_one(&rpm, ".src.rpm")?.context("no source RPM was made")?;
    let srpm_name = srpm.file_name().context("srpm name")?.to_string_lossy().into_owned();
    let out = output_dir(&build_dir)?;
    match executor {
        "bwrap" => {
            // As the worker's build user when it has one, with what the
            // worker hides hidden here too.
            let sandbox = crate::sandbox::Sandbox::from_env();
            let uid = sandbox.as_ref().and_then(|s| s.user).map_or(BUILD_UID, |u| u.uid);
            let gid = sandbox.as_ref().and_then(|s| s.user).map_or(BUILD_UID, |u| u.gid);
            run(Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(&rpm), "chown")?;
            // The host's root read-only, the build's dir at a fixed place,
            // private temp dirs, no network.
            let mut cmd = Command::new("bwrap");
            cmd.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
            cmd.args(["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp"]);
            if let Some(s) = &sandbox {
                s.hide_in(&mut cmd);
            }
            cmd.arg("--bind").arg(&rpm).arg("/tmp/kiln-build");
            cmd.args(["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"]);
            cmd.args(["--hostname", "kiln-build", "setpriv"]);
            cmd.args(
                format!(
                    "--reuid={uid} --regid={gid} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all"
                )
                .split(' '),
            );
            cmd.env_clear();
            keep_build_marks(&mut cmd);
            cmd.args(["--", "env", "HOME=/tmp", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]);
            cmd.args(["rpmbuild", "--rebuild", "--define", "_topdir /tmp/kiln-build/top"]);
            cmd.arg(format!("/tmp/kiln-build/{srpm_name}"));
            if let Err(e) = run(&mut cmd, "rpmbuild --rebuild") {
                super::failure::keep_after_failure(&rpm.join("top/BUILD"), keep);
                return Err(e);
            }
        }
        "mock" => {
            // mock makes and caches its own root (its config names the
            // distribution), installs the BuildRequires and builds as its
            // unprivileged `mockbuild` user; results land in --resultdir.
            let results = rpm.join("top/RPMS");
            fs::create_dir_all(&results)?;
            let mut cmd = Command::new("mock");
            if let Some(config) = mock_config {
                cmd.arg("-r").arg(config);
            }
            cmd.arg("--resultdir").arg(&results).arg("--rebuild").arg(&srpm);
            if let Err(e) = run(&mut cmd, "mock --rebuild") {
                // mock's own logs say why; its build tree is gone with its root.
                super::failure::keep_after_failure(&results, &["*.log".to_string()]);
                return Err(e);
            }
            // mock's record of the root's packages, and its logs.
            for (from, to) in [
                ("installed_pkgs.log", "buildroot-packages.txt"),
                ("root.log", "mock-root.log"),
                ("build.log", "mock-build.log"),
            ] {
                if fs::symlink_metadata(results.join(from)).is_ok_and(|m| m.is_file()) {
                    fs::copy(results.join(from), out.join(to))?;
                }
            }
        }
        "host" => {
            refuse_host_executor_in_sandbox()?;
            let mut cmd = Command::new("rpmbuild");
            cmd.arg("--rebuild").arg("--define").arg(format!("_topdir {}", rpm.join("top").display())).arg(&srpm);
            if let Err(e) = run(&mut cmd, "rpmbuild --rebuild") {
                super::failure::keep_after_failure(&rpm.join("top/BUILD"), keep);
                return Err(e);
            }
        }
        other => bail!("unknown executor {other}"),
    }
    let mut n = 0;
    let mut stack = vec![rpm.join("top/RPMS")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.file_name().to_string_lossy().ends_with(".rpm") {
                fs::copy(e.path(), out.join(e.file_name()))?;
                n += usize::from(!e.file_name().to_string_lossy().ends_with(".src.rpm"));
            }
        }
    }
    if n == 0 {
        bail!("the build produced no RPM");
    }
    fs::copy(&srpm, out.join(&srpm_name))?;
    eprintln!("kiln: {n} RPMs produced");
    Ok(())
}
