//! Running one step's command: `sh -c` in its own process group, output
//! captured through pipes, and the whole group signalled on cancel, timeout
//! or exit, so no process of a step outlives it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio::net::unix::pipe;

pub struct StepProcess {
    pub child: tokio::process::Child,
    pub pgid: i32,
    /// stdout and stderr in order (or stderr only, when stdout is captured).
    pub log: pipe::Receiver,
    /// stdout alone, for a `set_property` step.
    pub stdout: Option<pipe::Receiver>,
    _guard: GroupGuard,
}

/// Kills the step's process group when dropped: if the worker stops (or the
/// build's task is dropped) mid-step, nothing of the step is left running.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, libc::SIGKILL);
    }
}

/// Spawns `sh -c script` in `dir` as a new process group. When `capture` is
/// set, stdout comes through its own pipe (the runner logs it too). The
/// process writes itself into each of `cgroups` (`cgroup.procs` files)
/// before it runs the script, so all it starts is limited with it.
pub use crate::sandbox::BuildUser;

pub fn spawn(
    script: &str,
    dir: &Path,
    env: &[(String, String)],
    capture: bool,
    cgroups: Vec<std::ffi::CString>,
    sandbox: Option<(&crate::sandbox::Sandbox, &[&Path])>,
) -> std::io::Result<StepProcess> {
    let mut cmd = match sandbox {
        // In the sandbox, as the build user when the worker is root (no
        // groups, no capabilities, no way to regain any), with only the
        // build's own directories writable.
        Some((sandbox, writable)) => {
            let mut c = sandbox.command(&["/bin/sh", "-c", script], writable, &[], dir, true);
            c.env("HOME", dir);
            c
        }
        None => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
    };
    cmd.current_dir(dir).stdin(Stdio::null()).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if !cgroups.is_empty() {
        join_cgroups_before_exec(&mut cmd, cgroups);
    }
    // stdout and stderr share one pipe so the log keeps their order; a
    // `set_property` step needs stdout apart, so it gets two pipes.
    let (log_reader, log_writer) = std::io::pipe()?;
    let stdout_reader = if capture {
        let (r, w) = std::io::pipe()?;
        cmd.stdout(w);
        Some(r)
    } else {
        cmd.stdout(log_writer.try_clone()?);
        None
    };
    cmd.stderr(log_writer);
    let mut tcmd = tokio::process::Command::from(cmd);
    tcmd.kill_on_drop(true);
    let child = tcmd.spawn()?;
    // Drop our copies of the write ends (held by `tcmd`) so the readers see
    // EOF once the step's processes are gone.
    drop(tcmd);
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let log = pipe::Receiver::from_owned_fd(log_reader.into())?;
    let stdout = stdout_reader.map(|r| pipe::Receiver::from_owned_fd(r.into())).transpose()?;
    Ok(StepProcess { child, pgid, log, stdout, _guard: GroupGuard(pgid) })
}

#[allow(unsafe_code)]
fn join_cgroups_before_exec(cmd: &mut Command, files: Vec<std::ffi::CString>) {
    // SAFETY: the closure runs in the child between fork and exec. It only
    // calls open(2), write(2) and close(2) on paths prepared before the fork
    // (no allocation), all async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for f in &files {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" is the writing process itself.
                let ok = libc::write(fd, b"0\n".as_ptr().cast(), 2) == 2;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Sends a signal to one process.
pub fn kill_pid(pid: i32, signal: i32) {
    if pid > 0 {
        kill(pid, signal);
    }
}

/// Sends a signal to a whole process group; a group already gone is fine.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        kill(-pgid, signal);
    }
}

#[allow(unsafe_code)]
fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Kills every process left over from an earlier run of a worker using
/// `marker` (the value of `KILN_WORKER_DIR` in their environment). Returns
/// how many were killed.
pub fn kill_leftovers(marker: &str) -> usize {
    let needle = format!("KILN_WORKER_DIR={marker}");
    let me = std::process::id() as i32;
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            kill(pid, libc::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// Lazily unmounts every mount point at or below `dir` (deepest first), so
/// a build's overlay root never outlives it. Returns how many there were.
pub fn unmount_under(dir: &Path) -> usize {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return 0 };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts escapes spaces and the like as octal.
        .map(|p| p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
    points.len()
}
