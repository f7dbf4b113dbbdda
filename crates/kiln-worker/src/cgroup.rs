//! Memory and CPU limits for a build through cgroups: the v1 `memory` and
//! `cpu` controllers where they are mounted separately (as on these
//! machines), the unified v2 hierarchy elsewhere. A build's steps join the
//! group as they start (before exec, so nothing escapes), and the group is
//! emptied and removed when the build ends.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

pub struct BuildCgroup {
    /// One directory per hierarchy the build is limited in.
    dirs: Vec<PathBuf>,
    memory: Option<u64>,
    v2: bool,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl BuildCgroup {
    /// Makes the groups for a build; `None` when no limit is asked for.
    pub fn create(name: &str, memory: Option<u64>, cpus: Option<f64>) -> io::Result<Option<BuildCgroup>> {
        if memory.is_none() && cpus.is_none() {
            return Ok(None);
        }
        let v2 = Path::new(ROOT).join("cgroup.controllers").exists();
        let mut cg = BuildCgroup { dirs: Vec::new(), memory, v2 };
        let period: u64 = 100_000;
        let quota = cpus.map(|c| ((c * period as f64) as u64).max(1000));
        if v2 {
            let dir = Path::new(ROOT).join("kiln").join(name);
            let _ = write(&Path::new(ROOT).join("cgroup.subtree_control"), "+memory +cpu");
            fs::create_dir_all(&dir)?;
            let _ = write(&Path::new(ROOT).join("kiln/cgroup.subtree_control"), "+memory +cpu");
            cg.dirs.push(dir.clone());
            if let Some(m) = memory {
                write(&dir.join("memory.max"), &m.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0");
            }
            if let Some(q) = quota {
                write(&dir.join("cpu.max"), &format!("{q} {period}"))?;
            }
        } else {
            if let Some(m) = memory {
                let dir = Path::new(ROOT).join("memory/kiln").join(name);
                fs::create_dir_all(&dir)?;
                cg.dirs.push(dir.clone());
                write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                // Without swap accounting this file is absent; the limit above still holds.
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &m.to_string());
            }
            if let Some(q) = quota {
                let dir = Path::new(ROOT).join("cpu/kiln").join(name);
                fs::create_dir_all(&dir)?;
                cg.dirs.push(dir.clone());
                write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
        }
        Ok(Some(cg))
    }

    /// The `cgroup.procs` files a step's process writes itself into.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok())
            .collect()
    }

    /// Whether the kernel killed something in the group for lack of memory.
    pub fn out_of_memory(&self) -> bool {
        if self.memory.is_none() {
            return false;
        }
        let Some(dir) = self.dirs.first() else { return false };
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        fs::read_to_string(dir.join(file))
            .map(|s| s.lines().any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0")))
            .unwrap_or(false)
            || (!self.v2 && fs::read_to_string(dir.join("memory.failcnt")).is_ok_and(|s| s.trim() != "0"))
    }

    pub fn memory_limit(&self) -> Option<u64> {
        self.memory
    }
}

/// Removes the groups an earlier run of worker `worker` left (after a
/// crash or `kill -9`), killing anything still in them.
pub fn remove_leftovers(worker: &str) -> usize {
    let prefix = format!("{worker}-");
    let mut dirs = Vec::new();
    for parent in ["memory/kiln", "cpu/kiln", "kiln"] {
        let Ok(entries) = fs::read_dir(Path::new(ROOT).join(parent)) else { continue };
        dirs.extend(
            entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()),
        );
    }
    let n = dirs.len();
    drop(BuildCgroup { dirs, memory: None, v2: false });
    n
}

impl Drop for BuildCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Whatever is still in the group goes, then the group.
            for _ in 0..50 {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    crate::process::kill_pid(pid, libc::SIGKILL);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = fs::remove_dir(dir);
        }
    }
}
