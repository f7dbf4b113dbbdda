//! A channel's key rotated across running clients, with real apt, dnf and
//! rpm: both keys sign the indexes through the transition (a client that
//! trusts either keeps updating), `--resign` signs the packages again with
//! the new key, and once the transition is over a client needs the new key.
//! The RPM's summary is Latin-1, as old spec files have it: `dnf search`
//! finds it by its accented word.

use kiln_core::BuildState;
use kiln_testing::{run, wait_for, AptClient, DnfClient, Farm, MAKE_DEB, MAKE_LATIN1_RPM};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn config() -> String {
    format!(
        r#"[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"
arch = "amd64"

[[target]]
name = "el-9-x86_64"
family = "rpm"
arch = "x86_64"

[[component]]
name = "tool"
targets = ["debian-12-amd64"]
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "cafe"
targets = ["el-9-x86_64"]
steps = [ {{ name = "package", run = '''{MAKE_LATIN1_RPM}''' }} ]
artifacts = ["*.rpm"]

[[channel]]
name = "stable"
accepts = "nightly"
key = "keys/old.asc"
"#
    )
}

async fn fetch(url: &str) -> Vec<u8> {
    let r = reqwest::get(url).await.expect("get");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.expect("body").to_vec()
}

/// The fingerprints in an armored key file, as gpg reads them.
fn fingerprints(file: &Path) -> Vec<String> {
    let (code, out, err) =
        run(Command::new("gpg").args(["--show-keys", "--with-colons"]).arg(file)).expect("gpg --show-keys");
    assert_eq!(code, 0, "{err}");
    let mut fprs = Vec::new();
    let mut after_pub = false;
    for l in out.lines() {
        if l.starts_with("pub:") {
            after_pub = true;
        } else if after_pub && l.starts_with("fpr:") {
            fprs.push(l.split(':').nth(9).unwrap_or_default().to_string());
            after_pub = false;
        }
    }
    fprs
}

fn generate(farm: &Farm, kind: &str, out: &Path, passphrase: Option<&Path>) -> String {
    let mut cmd = farm.kiln();
    cmd.args(["key", "generate", "--type", kind, "--name", "Test Releases <rel@localhost>", "--out"]).arg(out);
    if let Some(p) = passphrase {
        cmd.arg("--passphrase-file").arg(p);
    }
    let (code, text, err) = run(&mut cmd).expect("kiln key generate");
    assert_eq!(code, 0, "{err}");
    text.lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("fingerprint")
        .split(' ')
        .next()
        .expect("fpr")
        .into()
}

fn dnf(farm: &Farm, n: usize, repo: &str, key: &Path, args: &[&str]) -> (i32, String, String) {
    DnfClient::new(&farm.path(&format!("dnf-{n}")), repo, key).dnf(args)
}

/// `rpm -K` of `file` against an rpm database holding only `keys`.
fn rpm_checks(farm: &Farm, db: &str, keys: &[&Path], file: &Path) -> (i32, String) {
    let dbpath = farm.path(db);
    let rpm = || {
        let mut c = Command::new("rpm");
        c.arg("--dbpath").arg(&dbpath);
        c
    };
    if !dbpath.exists() {
        assert_eq!(run(rpm().arg("--initdb")).expect("rpm --initdb").0, 0);
        for k in keys {
            let (code, out, err) = run(rpm().arg("--import").arg(k)).expect("rpm --import");
            assert_eq!(code, 0, "{out}{err}");
        }
    }
    let (code, out, err) = run(rpm().arg("-Kv").arg(file)).expect("rpm -Kv");
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_keeps_every_client_updating_until_the_transition_ends() {
    let mut farm = Farm::new(KILN.as_ref(), &config(), &[("secrets/new.pass", "new passphrase\n")]);
    // The old key is Ed25519; the farm moves to RSA 4096 (for EL8 clients, say).
    let old_fpr = generate(&farm, "ed25519", &farm.path("keys/old.asc"), None);
    farm.start_master().await;
    farm.start_worker("w1", &["debian-12-amd64", "el-9-x86_64"], 2);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let base = farm.url();
    let created = client.create_builds(&kiln_testing::request(&["tool", "cafe"], &[])).await.expect("create");
    for b in &created.builds {
        let done = farm.wait_finished(b.id, Duration::from_secs(120)).await;
        assert_eq!(done.state, BuildState::Succeeded, "{done:?}");
    }
    let yum = format!("{base}/repos/stable/yum/el-9-x86_64");

    // Clients that trust the old key only.
    let old_key = farm.path("client-old.asc");
    std::fs::write(&old_key, fetch(&format!("{base}/repos/stable/key.asc")).await).expect("key");
    assert_eq!(fingerprints(&old_key), vec![old_fpr.clone()]);
    let apt_old = AptClient::new(
        &farm.path("apt-old"),
        &[format!("deb [signed-by={}] {base}/repos/stable/apt bookworm main", old_key.display())],
    );
    let (code, out, err) = apt_old.apt_get(&["update"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = dnf(&farm, 0, &yum, &old_key, &["search", "café"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("kiln-cafe.noarch") && out.contains("Café au lait maker"), "dnf search café:\n{out}\n{err}");
    let rpm_file = farm.path("cafe.rpm");
    let listed = client.packages("stable", Some("kiln-cafe"), None).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    std::fs::write(&rpm_file, fetch(&format!("{base}/repos/stable/{}", listed[0].path)).await).expect("rpm");
    let (code, out) = rpm_checks(&farm, "rpmdb-old", &[&old_key], &rpm_file);
    assert_eq!(code, 0, "{out}");

    // The rotation, as an operator runs it: a new RSA key with a passphrase,
    // a transition of a day, every package signed again.
    let new_fpr = generate(&farm, "rsa4096", &farm.path("keys/new.asc"), Some(&farm.path("secrets/new.pass")));
    let (code, out, err) = run(farm
        .kiln()
        .args(["key", "rotate", "stable", "--transition", "1d", "--resign", "--new"])
        .arg(farm.path("keys/new.asc"))
        .arg("--passphrase-file")
        .arg(farm.path("secrets/new.pass"))
        .arg("--config")
        .arg(farm.path("farm.toml")))
    .expect("kiln key rotate");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("key {new_fpr} signs from now on; {old_fpr} signs its indexes too")), "{out}");
    assert!(out.contains("re-signed 1 file(s) in stable"), "{out}");
    let written = std::fs::read_to_string(farm.path("farm.toml")).expect("config");
    assert!(
        written.contains("key = \"keys/new.asc\"") && written.contains("previous_key = { key = \"keys/old.asc\""),
        "{written}"
    );
    assert!(!farm.master_log().contains("new passphrase"), "the passphrase never reaches a log");

    // The transition: key.asc holds both keys; each kind of client keeps
    // updating with the key it has.
    let both = farm.path("client-both.asc");
    std::fs::write(&both, fetch(&format!("{base}/repos/stable/key.asc")).await).expect("key");
    assert_eq!(fingerprints(&both), [new_fpr.clone(), old_fpr.clone()]);
    // A client that has only the new key, as `kiln key generate` wrote it.
    let new_key = farm.path("keys/new.asc.pub.asc");
    assert_eq!(fingerprints(&new_key), vec![new_fpr.clone()]);
    let apt_new = AptClient::new(
        &farm.path("apt-new"),
        &[format!("deb [signed-by={}] {base}/repos/stable/apt bookworm main", new_key.display())],
    );
    for (who, apt) in [("old key", &apt_old), ("new key", &apt_new)] {
        let (code, out, err) = apt.apt_get(&["update"]);
        assert_eq!(code, 0, "{who}: {out}\n{err}");
        assert!(!err.contains("E:"), "{who}: {err}");
        let (code, out, err) = apt.apt_get(&["install", "-y", "--download-only", "kiln-tool"]);
        assert_eq!(code, 0, "{who}: {out}\n{err}");
    }
    for (n, key) in [(1, &old_key), (2, &new_key)] {
        let (code, out, err) = dnf(&farm, n, &yum, key, &["repoquery", "--repo", "kiln", "--qf", "%{name}"]);
        assert_eq!(code, 0, "{}: {out}\n{err}", key.display());
        assert!(out.lines().any(|l| l == "kiln-cafe"), "{out}");
    }
    // The package was signed again: by the new key only.
    let listed = client.packages("stable", Some("kiln-cafe"), None).await.expect("list");
    std::fs::write(&rpm_file, fetch(&format!("{base}/repos/stable/{}", listed[0].path)).await).expect("rpm");
    let (code, out) = rpm_checks(&farm, "rpmdb-old", &[&old_key], &rpm_file);
    assert_ne!(code, 0, "signed by the new key, which this rpm database does not have: {out}");
    assert!(out.contains("NOKEY"), "{out}");
    let (code, out) = rpm_checks(&farm, "rpmdb-both", &[&both], &rpm_file);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Header V4 RSA/SHA256 Signature") && !out.contains("NOT OK"), "{out}");

    // The transition ends (the operator ends it now instead of waiting a
    // day): the old key no longer signs, and is no longer published.
    let at = written.find("until = \"").expect("until") + "until = \"".len();
    let len = written[at..].find('"').expect("closing quote");
    let ended = format!("{}2026-01-01{}", &written[..at], &written[at + len..]);
    assert_ne!(ended, written);
    kiln_repo::fsio::write_atomic(&farm.path("farm.toml"), ended.as_bytes()).expect("config");
    let key_url = format!("{base}/repos/stable/key.asc");
    let dropped = wait_for(Duration::from_secs(60), || async {
        let now = farm.path("client-now.asc");
        std::fs::write(&now, fetch(&key_url).await).is_ok() && fingerprints(&now) == [new_fpr.clone()]
    })
    .await;
    assert!(dropped, "the old key is still published:\n{}", farm.master_log());
    let (code, out, err) = apt_new.apt_get(&["update"]);
    assert_eq!(code, 0, "new key: {out}\n{err}");
    let (code, out, err) = apt_old.apt_get(&["update"]);
    assert!(code != 0 || err.contains("NO_PUBKEY"), "the old key alone no longer verifies: {out}\n{err}");
    let (code, out, err) = dnf(&farm, 3, &yum, &old_key, &["repoquery", "--repo", "kiln"]);
    assert_ne!(code, 0, "old key alone: {out}\n{err}");
    // The client takes the new key and goes on.
    std::fs::copy(&new_key, &old_key).expect("client imports the new key");
    let (code, out, err) = apt_old.apt_get(&["update"]);
    assert_eq!(code, 0, "after importing the new key: {out}\n{err}");
    assert!(!err.contains("NO_PUBKEY"), "{err}");
    let (code, out, err) = dnf(&farm, 4, &yum, &old_key, &["repoquery", "--repo", "kiln", "--qf", "%{name}"]);
    assert_eq!(code, 0, "{out}\n{err}");
}
