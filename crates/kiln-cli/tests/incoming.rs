//! The incoming directory: uploads dropped by `dput` (method local) and by
//! a plain copy are taken like HTTP uploads, bad ones are rejected with the
//! reason (the same name twice, too), and the uploader hears of each by
//! mail from a real SMTP server (aiosmtpd).

use kiln_core::BuildState;
use kiln_testing::{free_addr, listening, mails, run, wait_for, Farm, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const SPEC: &str = "Name: kiln-dropped\nVersion: 2.0\nRelease: 1\nSummary: dropped by scp\nLicense: MIT\nBuildArch: noarch\n\n\
%description\nA package dropped into the incoming directory.\n\n%install\nmkdir -p %{buildroot}/usr/share/kiln-dropped\n\
echo dropped > %{buildroot}/usr/share/kiln-dropped/note\n\n%files\n/usr/share/kiln-dropped/note\n";

/// A source RPM of the spec above.
fn srpm(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("kiln-dropped.spec"), SPEC).expect("spec");
    let (code, _, err) = run(Command::new("rpmbuild")
        .arg("-bs")
        .arg("--define")
        .arg(format!("_topdir {}", dir.join("top").display()))
        .arg(dir.join("kiln-dropped.spec")))
    .expect("rpmbuild -bs");
    assert_eq!(code, 0, "{err}");
    dir.join("top/SRPMS/kiln-dropped-2.0-1.src.rpm")
}

/// A native Debian source package and its source-only `.changes`, as a
/// maintainer makes them before `dput`.
fn debian_upload(dir: &Path) -> PathBuf {
    let tree = dir.join("kiln-drop-1.0");
    let files = [
        ("debian/control", "Source: kiln-drop\nMaintainer: Ann Packager <ann@example.org>\nBuild-Depends: debhelper-compat (= 13)\nStandards-Version: 4.6.2\n\nPackage: kiln-drop\nArchitecture: all\nDescription: dropped\n by dput.\n"),
        ("debian/changelog", "kiln-drop (1.0) bookworm; urgency=medium\n\n  * Dropped.\n\n -- Ann Uploader <ann@example.org>  Sun, 22 Nov 2026 00:00:00 +0000\n"),
        ("debian/rules", "#!/usr/bin/make -f\n%:\n\tdh $@\n"),
        ("debian/source/format", "3.0 (native)\n"),
    ];
    for (p, t) in files {
        std::fs::create_dir_all(tree.join(p).parent().expect("parent")).expect("dir");
        std::fs::write(tree.join(p), t).expect("write");
    }
    let (code, _, err) =
        run(Command::new("dpkg-source").arg("-b").arg("kiln-drop-1.0").current_dir(dir)).expect("dpkg-source");
    assert_eq!(code, 0, "{err}");
    let (code, changes, err) =
        run(Command::new("dpkg-genchanges").args(["-S", "-DDistribution=bookworm"]).current_dir(&tree))
            .expect("dpkg-genchanges");
    assert_eq!(code, 0, "{err}");
    let path = dir.join("kiln-drop_1.0_source.changes");
    std::fs::write(&path, changes).expect("changes");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_dropped_into_the_incoming_directory_are_taken_or_rejected_and_mailed() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let smtp_addr = free_addr();
    let maildir = scratch.path().join("maildir");
    let smtp = Command::new("/usr/bin/python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &smtp_addr.to_string(), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aiosmtpd starts");
    let _smtp = Server(smtp);
    listening(smtp_addr, "aiosmtpd").await;

    let config = format!(
        r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "el-9"
family = "rpm"

[[target]]
name = "debian-12"
family = "deb"
suite = "bookworm"
mirror = "http://deb.example.invalid/debian"

[uploads]
incoming_dir = "drop"
incoming_quiet = "1s"
mail = ["builds@example.org"]

[smtp]
server = "127.0.0.1"
port = {}
security = "none"
from = "kiln <kiln@example.org>"
"#,
        smtp_addr.port()
    );
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["el-9"], 1).await;
    let drop = farm.path("drop");
    let up = wait_for(Duration::from_secs(20), || async { drop.is_dir() }).await;
    assert!(up, "the master makes the incoming directory: {}", farm.master_log());
    let client = farm.client();
    let builds_of = async |component: &str| {
        let page = client.builds(&Default::default()).await.expect("builds");
        page.builds.into_iter().filter(|b| b.component == component).collect::<Vec<_>>()
    };

    // A source RPM copied in (as scp does): taken, built, mailed to the list.
    let rpm = srpm(&scratch.path().join("rpm"));
    std::fs::copy(&rpm, drop.join("kiln-dropped-2.0-1.src.rpm")).expect("copy");
    let taken = wait_for(Duration::from_secs(60), || async { !builds_of("kiln-dropped").await.is_empty() }).await;
    assert!(taken, "{}", farm.master_log());
    let b = &builds_of("kiln-dropped").await[0];
    assert_eq!(b.requested_by.as_deref(), Some("incoming"));
    let b = farm.wait_finished(b.id, Duration::from_secs(120)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert!(b.artifacts.iter().any(|a| a.name == "kiln-dropped-2.0-1.noarch.rpm"), "{:?}", b.artifacts);
    assert!(std::fs::read_dir(&drop).expect("drop").next().is_none(), "the drop box is empty again");

    // dput (method local) of a .changes: taken with every file it lists,
    // and the uploader named by Changed-By hears of it.
    let changes = debian_upload(&scratch.path().join("deb"));
    let dput_cf = scratch.path().join("dput.cf");
    std::fs::write(
        &dput_cf,
        format!("[kiln]\nmethod = local\nincoming = {}\nallow_unsigned_uploads = 1\nrun_lintian = 0\n", drop.display()),
    )
    .expect("dput.cf");
    let (code, out, err) =
        run(Command::new("dput").arg("-u").arg("-c").arg(&dput_cf).arg("kiln").arg(&changes)).expect("dput");
    assert_eq!(code, 0, "{out}{err}");
    let taken = wait_for(Duration::from_secs(60), || async { !builds_of("kiln-drop").await.is_empty() }).await;
    assert!(taken, "{}", farm.master_log());
    let b = &builds_of("kiln-drop").await[0];
    assert_eq!(b.target, "debian-12");
    assert!(b.properties.contains_key("upload"), "{b:?}");
    let mailed = wait_for(Duration::from_secs(60), || async {
        mails(&maildir).iter().any(|m| m.contains("kiln-drop 1.0 accepted") && m.contains("ann@example.org"))
    })
    .await;
    assert!(mailed, "{:?}", mails(&maildir));
    assert!(mails(&maildir)
        .iter()
        .any(|m| m.contains("kiln-dropped 2.0-1 accepted") && m.contains("builds@example.org")));

    // A .dsc whose file does not match, dropped twice under the same name:
    // rejected twice, kept twice with the reason, and the master carries on.
    for _ in 0..2 {
        std::fs::write(drop.join("x_1.0.tar.xz"), b"not what the dsc says").expect("write");
        let dsc = "Source: xy\nVersion: 1.0\nChecksums-Sha256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 21 x_1.0.tar.xz\nFiles:\n d41d8cd98f00b204e9800998ecf8427e 21 x_1.0.tar.xz\nMaintainer: Bob <bob@example.org>\n";
        std::fs::write(drop.join("x_1.0.dsc"), dsc).expect("write");
        let gone = wait_for(Duration::from_secs(60), || async { !drop.join("x_1.0.dsc").exists() }).await;
        assert!(gone, "{}", farm.master_log());
    }
    let rejected = farm.path("data/rejected");
    let reason = std::fs::read_to_string(rejected.join("x_1.0.dsc/REASON")).expect("reason");
    assert!(reason.contains("x_1.0.tar.xz: SHA256 checksum mismatch"), "{reason}");
    assert!(rejected.join("x_1.0.dsc.1/REASON").exists() && rejected.join("x_1.0.dsc.1/x_1.0.tar.xz").exists());
    let mailed = wait_for(Duration::from_secs(60), || async {
        mails(&maildir).iter().filter(|m| m.contains("x_1.0.dsc rejected") && m.contains("bob@example.org")).count()
            == 2
    })
    .await;
    assert!(mailed, "{:?}", mails(&maildir));
    assert!(builds_of("xy").await.is_empty());
    assert_eq!(client.status().await.map(|_| ()).ok(), Some(()), "the master is still up");
}
