//! The Debian package (`scripts/build-deb`): built from this test's own
//! binary, installed with apt into a fresh Debian that mmdebstrap makes from
//! the host's mirror, and checked there as an operator would find it: its
//! config passes `kiln checkconfig`, systemd has nothing to say about its
//! units, the `kiln` user and the example worker's token exist, and the
//! config is a conffile.

use kiln_testing::{host_debian_mirror, run};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Runs `args` inside the installed root; (exit code, stdout, stderr).
fn in_root(root: &Path, args: &[&str]) -> (i32, String, String) {
    run(Command::new("chroot").arg(root).args(args)).expect("chroot runs")
}

#[test]
fn the_debian_package_installs_a_good_config_units_systemd_accepts_and_the_kiln_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = dir.path().join("out");
    // gzip: xz takes a minute of CPU over a debug binary.
    let (code, stdout, stderr) =
        run(Command::new(repo.join("scripts/build-deb")).arg(KILN).arg(&out).env("DPKG_DEB_COMPRESSOR_TYPE", "gzip"))
            .expect("scripts/build-deb runs");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let deb = PathBuf::from(stdout.trim());
    assert!(deb.is_file() && deb.starts_with(&out), "it prints the package it wrote: {stdout}");
    let name = deb.file_name().expect("file name").to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(name.starts_with(&format!("kiln_{version}_")) && name.ends_with(".deb"), "{name}");
    let (code, fields, err) =
        run(Command::new("dpkg-deb").arg("--field").arg(&deb).args(["Package", "Version"])).expect("dpkg-deb");
    assert_eq!(code, 0, "{err}");
    assert_eq!(fields, format!("Package: kiln\nVersion: {version}\n"));

    // A minimal Debian with systemd (for systemd-analyze), and the package
    // installed the way the docs say, by apt, which brings its Depends.
    let (mirror, suite) = host_debian_mirror().expect("the host's apt sources name a Debian mirror");
    let root = dir.path().join("root");
    let started = std::time::Instant::now();
    let (code, o, e) = run(Command::new("mmdebstrap")
        .args(["--quiet", "--variant=apt", "--include=systemd"])
        .arg(format!("--customize-hook=copy-in {} /tmp", deb.display()))
        .arg(format!(
            "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends /tmp/{name}"
        ))
        .arg(format!("--customize-hook=rm \"$1\"/tmp/{name}"))
        .arg(&suite)
        .arg(&root)
        .arg(format!("deb {mirror} {suite} main")))
    .expect("mmdebstrap runs");
    assert_eq!(code, 0, "mmdebstrap: {o}{e}");
    eprintln!("the root with kiln installed took {:.0}s", started.elapsed().as_secs_f64());

    // The config as installed is one the master takes, without warnings.
    let (code, o, e) = in_root(&root, &["kiln", "checkconfig", "/etc/kiln/farm.toml"]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.starts_with("config is good: 1 components × 1 targets = 1 builders, 1 workers"), "{o}");
    assert!(!e.contains("warning"), "{e}");

    // systemd loads both units (the template as an instance) and finds
    // nothing wrong: no unknown or misspelt setting, no missing binary.
    let units = ["kiln-master.service", "kiln-worker@w1.service"];
    let (code, o, e) = in_root(&root, &[&["systemd-analyze", "verify"][..], &units[..]].concat());
    assert_eq!(code, 0, "{o}{e}");
    let about_kiln: Vec<&str> = o.lines().chain(e.lines()).filter(|l| l.contains("kiln")).collect();
    assert!(about_kiln.is_empty(), "systemd-analyze verify: {about_kiln:#?}");

    // The user the master runs as, whose home is its data dir.
    let (code, passwd, e) = in_root(&root, &["getent", "passwd", "kiln"]);
    assert_eq!(code, 0, "{e}");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd}");
    assert_eq!((fields[5], fields[6]), ("/var/lib/kiln", "/usr/sbin/nologin"), "{passwd}");
    let kiln_uid: u32 = fields[2].parse().expect("uid");
    assert!(kiln_uid < 1000, "a system user: {passwd}");

    // The example worker's token: random, the master's to read, nobody else's.
    let token_file = root.join("etc/kiln/secrets/w1.token");
    let token = std::fs::read_to_string(&token_file).expect("postinst made w1's token");
    assert!(token.trim().len() == 48 && token.trim().bytes().all(|b| b.is_ascii_hexdigit()), "{token:?}");
    let meta = std::fs::metadata(&token_file).expect("token");
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (kiln_uid, 0o600));
    let secrets = std::fs::metadata(root.join("etc/kiln/secrets")).expect("secrets dir");
    assert_eq!((secrets.uid(), secrets.permissions().mode() & 0o777), (0, 0o750));

    // The configs are conffiles, and every other file is as shipped.
    let (code, conffiles, e) = in_root(&root, &["dpkg-query", "-W", "--showformat=${Conffiles}\n", "kiln"]);
    assert_eq!(code, 0, "{e}");
    for file in ["/etc/kiln/farm.toml", "/etc/kiln/worker-w1.env"] {
        assert!(conffiles.lines().any(|l| l.split_whitespace().next() == Some(file)), "{file}: {conffiles}");
    }
    let (code, o, e) = in_root(&root, &["dpkg", "--verify", "kiln"]);
    assert_eq!((code, o.as_str(), e.as_str()), (0, "", ""), "the installed files match the package's md5sums");
}
