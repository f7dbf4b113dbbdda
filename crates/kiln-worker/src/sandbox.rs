//! The sandbox untrusted build code runs in: a component's own steps, and
//! the parts of kiln's standard pipeline that read or run what a source
//! tree says (dpkg-source, the changelog, a spec through rpmspec and
//! rpmbuild -bs).
//!
//! It is bubblewrap over the host, read-only, with the build's own
//! directories bound writable and everything of the worker's hidden under
//! empty file systems (its work dir with the other builds, its root cache,
//! the directories holding its token and keys, `/root`, `/home`). The build
//! gets its own PID, IPC and UTS namespaces, so it sees no other build's
//! processes (nor their environment through `/proc`), and when its first
//! process ends the kernel ends every process left in the namespace: a
//! `setsid` or double-forked child does not outlive the step. On a root
//! worker the code runs as the unprivileged build user with no
//! capabilities, groups or way to regain them (`setpriv`); a worker that is
//! not root gets the same through bubblewrap's user namespace.

use anyhow::{bail, Context};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable carrying the hidden paths to kiln's own pipeline
/// helpers (one per line).
pub const HIDE_ENV: &str = "KILN_SANDBOX_HIDE";
/// Environment variable carrying the build user (`UID:GID`) to the helpers.
pub const USER_ENV: &str = "KILN_BUILD_USER";

/// Where untrusted code may not look, and who it runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Paths hidden inside: a directory is replaced by an empty one, a
    /// file by an empty file.
    pub hide: Vec<PathBuf>,
    /// The user a root worker runs build code as; `None` when the worker is
    /// not root (bubblewrap's user namespace keeps its user).
    pub user: Option<BuildUser>,
}

impl Sandbox {
    /// The sandbox a worker's helper was given through its environment, if any.
    pub fn from_env() -> Option<Sandbox> {
        Sandbox::parse(&std::env::var(HIDE_ENV).ok()?, std::env::var(USER_ENV).ok().as_deref())
    }

    fn parse(hide: &str, user: Option<&str>) -> Option<Sandbox> {
        let hide = hide.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect();
        let user = match user {
            Some(v) => {
                let (u, g) = v.split_once(':')?;
                Some(BuildUser { uid: u.parse().ok()?, gid: g.parse().ok()? })
            }
            None => None,
        };
        Some(Sandbox { hide, user })
    }

    /// The environment that passes this sandbox on to a helper.
    pub fn env(&self) -> Vec<(String, String)> {
        let hide: Vec<String> = self.hide.iter().map(|p| p.display().to_string()).collect();
        let mut env = vec![(HIDE_ENV.to_string(), hide.join("\n"))];
        if let Some(u) = self.user {
            env.push((USER_ENV.to_string(), format!("{}:{}", u.uid, u.gid)));
        }
        env
    }

    /// Adds to a bubblewrap command what hides the worker's own files: an
    /// empty file system over each hidden directory, an empty file over each
    /// hidden file.
    pub fn hide_in(&self, cmd: &mut Command) {
        for path in &self.hide {
            if path.is_dir() {
                cmd.arg("--tmpfs").arg(path);
            } else if path.exists() {
                cmd.arg("--ro-bind").arg("/dev/null").arg(path);
            }
        }
    }

    /// A command that runs `argv` in the sandbox, with `writable` (at the
    /// same paths) the only places it may change and `readable` shown
    /// read-only though under a hidden directory; `cwd` is its directory.
    /// `network` keeps the host's network (a component's steps may fetch);
    /// kiln's source steps run without.
    pub fn command(&self, argv: &[&str], writable: &[&Path], readable: &[&Path], cwd: &Path, network: bool) -> Command {
        let mut cmd = Command::new("bwrap");
        cmd.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
        cmd.args(["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp"]);
        let binds: Vec<(&str, &Path)> =
            writable.iter().map(|d| ("--bind", *d)).chain(readable.iter().map(|d| ("--ro-bind", *d))).collect();
        let system = [Path::new("/tmp"), Path::new("/var/tmp")];
        // Directories bubblewrap makes on its own on the way to a mount
        // are root's and 0700: make the ones leading to the build's
        // directories first, passable (0755), before anything is mounted
        // on the way.
        let passable = |cmd: &mut Command, emptied: &[&Path], dir: &Path| {
            let under = |a: &Path| emptied.iter().any(|h| a != *h && a.starts_with(h));
            let mut above: Vec<&Path> = dir.ancestors().skip(1).take_while(|a| under(a)).collect();
            above.reverse();
            for a in above {
                cmd.args(["--perms", "0755", "--dir"]).arg(a);
            }
        };
        for (_, dir) in &binds {
            passable(&mut cmd, &system, dir);
        }
        self.hide_in(&mut cmd);
        let emptied: Vec<&Path> = self.hide.iter().map(PathBuf::as_path).chain(system).collect();
        for (how, dir) in &binds {
            passable(&mut cmd, &emptied, dir);
            cmd.arg(how).arg(dir).arg(dir);
        }
        cmd.args(["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "kiln-build"]);
        if !network {
            cmd.arg("--unshare-net");
        }
        // The step stays in the worker's process group for it, so a cancel's
        // SIGTERM reaches it (and its grace time holds) as without a sandbox.
        cmd.args(["--die-with-parent", "--chdir"]).arg(cwd);
        if let Some(u) = self.user {
            cmd.arg("setpriv").arg(format!("--reuid={}", u.uid)).arg(format!("--regid={}", u.gid)).args([
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]);
        } else {
            // Without a user to drop to (bubblewrap's own user namespace),
            // still no capabilities inside.
            cmd.args(["--cap-drop", "ALL"]);
            cmd.arg("--");
        }
        cmd.args(argv);
        cmd
    }
}

/// The unprivileged user a root worker runs build steps as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildUser {
    pub uid: u32,
    pub gid: u32,
}

impl BuildUser {
    /// Looks a user up in `/etc/passwd`.
    pub fn named(name: &str) -> Option<BuildUser> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some(BuildUser { uid: f[2].parse().ok()?, gid: f[3].parse().ok()? }))?
        })
    }
}

/// Makes every file under `dir` (and `dir`) the build user's, without
/// following a link anywhere.
pub fn give_tree(dir: &Path, u: BuildUser) -> std::io::Result<()> {
    // `read_dir` follows a link: a tree that is one would hand its target over.
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(std::io::Error::other(format!("{} is a link, not a directory", dir.display())));
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::os::unix::fs::lchown(&d, Some(u.uid), Some(u.gid))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                std::os::unix::fs::lchown(e.path(), Some(u.uid), Some(u.gid))?;
            }
        }
    }
    Ok(())
}

/// Marks a helper already running inside the build's sandbox.
const IN_SANDBOX_ENV: &str = "KILN_IN_SANDBOX";

/// Whether this helper already runs inside the build's sandbox.
pub(crate) fn in_sandbox() -> bool {
    std::env::var_os(IN_SANDBOX_ENV).is_some()
}

/// Runs this helper again, with the same arguments, inside the sandbox the
/// worker gave (as the build user, without network, `writable` the only
/// places it may change, the tree handed to the build user first): what a
/// source tree says is read and run there, never by root. Returns false
/// when there is no sandbox (a root worker trusted to build as root) or
/// this already runs inside it; the caller then does the work itself.
pub(crate) fn rerun_in_sandbox(tree: &Path, writable: &[&Path]) -> anyhow::Result<bool> {
    // The tree is always visible (read-only unless it is among `writable`).
    let readable: &[&Path] = if writable.contains(&tree) { &[] } else { &[tree] };
    if std::env::var_os(IN_SANDBOX_ENV).is_some() {
        return Ok(false);
    }
    let Some(sandbox) = Sandbox::from_env() else { return Ok(false) };
    if let Some(user) = sandbox.user {
        for dir in std::iter::once(tree).chain(writable.iter().copied()) {
            give_tree(dir, user).with_context(|| format!("cannot hand {} over", dir.display()))?;
        }
    }
    let exe = std::env::current_exe().context("cannot find kiln's own executable")?;
    let exe = exe.to_string_lossy().into_owned();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = std::iter::once(exe.as_str()).chain(args.iter().map(String::as_str)).collect();
    let mut cmd = sandbox.command(&argv, writable, readable, tree, false);
    cmd.env(IN_SANDBOX_ENV, "1").env("HOME", "/tmp").stdin(Stdio::null());
    let status = cmd.status().context("cannot run bwrap")?;
    if !status.success() {
        bail!("the step failed in its sandbox ({status})");
    }
    Ok(true)
}

/// Reads the file at `rel` in the source tree `tree`, refusing one that is
/// (or passes through) a link leading out of the tree. The contents never
/// appear in an error.
pub(crate) fn read_in_tree(tree: &Path, rel: &Path) -> anyhow::Result<String> {
    let shown = rel.display();
    let root = tree.canonicalize().with_context(|| format!("cannot resolve {}", tree.display()))?;
    let path = tree.join(rel).canonicalize().with_context(|| format!("cannot open {shown}"))?;
    if !path.starts_with(&root) {
        bail!("{shown} leads out of the source tree (a link); kiln reads only files inside it");
    }
    let bytes = fs::read(&path).with_context(|| format!("cannot read {shown}"))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{shown} is not UTF-8 text"))
}

/// What a worker hides from build code: its work dir (other builds, their
/// secrets and results), its root cache, the files of its token and keys,
/// and users' homes. Relative paths are made absolute from the worker's
/// directory.
pub fn hidden_paths(workdir: &Path, root_cache: Option<&Path>, private_files: &[PathBuf]) -> Vec<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
    let mut paths = vec![abs(workdir)];
    paths.extend(root_cache.map(abs));
    paths.extend(private_files.iter().map(|f| abs(f)));
    // Homes, and the sockets of services that would run a command outside
    // (a user's systemd and D-Bus, Docker).
    paths.extend(["/root", "/home", "/run/user", "/run/docker.sock", "/run/dbus"].map(PathBuf::from));
    paths.sort();
    paths.dedup();
    paths
}

/// Whether bubblewrap can make a sandbox on this host (installed, and user
/// namespaces allowed when the worker is not root).
pub fn available() -> Result<(), String> {
    let out = Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "--", "true"])
        .output()
        .map_err(|e| format!("cannot run bwrap (install bubblewrap): {e}"))?;
    if !out.status.success() {
        return Err(format!("bwrap cannot make a sandbox here: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_paths_cover_the_worker_and_its_secrets() {
        let paths = hidden_paths(
            Path::new("/srv/kiln/work"),
            Some(Path::new("/var/cache/kiln")),
            &[PathBuf::from("/etc/kiln/w1.token"), PathBuf::from("/w1.token")],
        );
        for p in ["/srv/kiln/work", "/var/cache/kiln", "/etc/kiln/w1.token", "/w1.token", "/root", "/home"] {
            assert!(paths.contains(&PathBuf::from(p)), "{p}: {paths:?}");
        }
    }

    #[test]
    fn the_sandbox_travels_to_helpers_through_the_environment() {
        let sb = Sandbox { hide: vec!["/a b".into(), "/c".into()], user: Some(BuildUser { uid: 65534, gid: 65534 }) };
        let env: std::collections::HashMap<String, String> = sb.env().into_iter().collect();
        assert_eq!(Sandbox::parse(&env[HIDE_ENV], env.get(USER_ENV).map(String::as_str)), Some(sb));
        assert_eq!(Sandbox::parse("/x", Some("nobody")), None, "a malformed user is no sandbox");
    }
}
