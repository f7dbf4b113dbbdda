//! Clients that read what kiln serves, as users' machines do: dnf (its
//! own install root, repository list and cache, one repository `kiln`
//! trusted through one key file, `repo_gpgcheck` and `gpgcheck` on), and
//! Python's zlib, which reads only the first member of a gzip file.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct DnfClient {
    pub dir: PathBuf,
    repo: String,
    key: PathBuf,
}

impl DnfClient {
    /// A client of the YUM repository at URL `repo` trusting the armored keys in `key`.
    pub fn new(dir: &Path, repo: &str, key: &Path) -> DnfClient {
        std::fs::create_dir_all(dir.join("repos.d")).expect("dnf dirs");
        std::fs::create_dir_all(dir.join("root")).expect("dnf dirs");
        DnfClient { dir: dir.to_path_buf(), repo: repo.to_string(), key: key.to_path_buf() }
    }

    /// The install root packages go to.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `dnf` with the isolating options and `args`, metadata always fetched
    /// afresh; (exit code, stdout, stderr).
    pub fn dnf(&self, args: &[&str]) -> (i32, String, String) {
        crate::run(
            Command::new("dnf")
                .args(["-y", "-q", "--refresh", "--releasever=9", "--disableplugin=*"])
                .arg("--setopt=skip_if_unavailable=False")
                .arg(format!("--installroot={}", self.root().display()))
                .arg(format!("--setopt=reposdir={}", self.dir.join("repos.d").display()))
                .arg(format!("--setopt=cachedir={}", self.dir.join("cache").display()))
                .arg(format!("--repofrompath=kiln,{}", self.repo))
                .args(["--setopt=kiln.gpgcheck=1", "--setopt=kiln.repo_gpgcheck=1"])
                .arg(format!("--setopt=kiln.gpgkey=file://{}", self.key.display()))
                .args(args),
        )
        .unwrap_or_else(|e| (-1, String::new(), e.to_string()))
    }
}

/// The content of gzip file `file` as Python's `zlib` reads it (one
/// member, as readers that stop after the first see it); fails the test
/// unless that is the whole file.
pub fn python_gunzip(file: &Path) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zlib; d = zlib.decompressobj(31); out = d.decompress(open(sys.argv[1], 'rb').read()); \
             assert d.eof and not d.unused_data, 'not one whole gzip member'; sys.stdout.buffer.write(out)",
        )
        .arg(file)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}
