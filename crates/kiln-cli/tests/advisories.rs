//! Advisories, end to end with real dnf: an operator publishes a security
//! advisory for the newer of two builds of a package; `dnf updateinfo
//! list` on a machine with the older one shows it, and `dnf upgrade
//! --security` upgrades to it.

use kiln_core::BuildState;
use kiln_testing::{run, DnfClient, Farm, MAKE_LATIN1_RPM};
use std::process::Command;
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn config() -> String {
    format!(
        r#"[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "el-9-x86_64"
family = "rpm"
arch = "x86_64"

[[component]]
name = "cafe"
steps = [ {{ name = "package", run = '''{MAKE_LATIN1_RPM}''' }} ]
artifacts = ["*.rpm"]

[[channel]]
name = "updates"
accepts = "nightly"
key_type = "ed25519"
"#
    )
}

async fn build(farm: &Farm) -> i64 {
    let created = farm.client().create_builds(&kiln_testing::request(&["cafe"], &[])).await.expect("create");
    let id = created.builds[0].id;
    let done = farm.wait_finished(id, Duration::from_secs(120)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{done:?}");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_security_advisory_reaches_dnf_updateinfo_and_upgrade_security() {
    let mut farm = Farm::new(KILN.as_ref(), &config(), &[]);
    farm.start_master().await;
    farm.start_worker("w1", &["el-9-x86_64"], 1);
    farm.wait_for_workers(&["w1"]).await;
    let base = farm.url();
    let yum = format!("{base}/repos/updates/yum/el-9-x86_64");
    let key = farm.path("updates.asc");
    let bytes = reqwest::get(format!("{base}/repos/updates/key.asc")).await.expect("key").bytes().await.expect("key");
    std::fs::write(&key, bytes).expect("key");
    let dnf = DnfClient::new(&farm.path("dnf"), &yum, &key);

    // The machine runs the first build's package.
    let first = build(&farm).await;
    let (code, out, err) = dnf.dnf(&["install", "kiln-cafe"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let installed =
        || run(Command::new("rpm").arg("--root").arg(dnf.root()).args(["-q", "kiln-cafe"])).expect("rpm -q").1;
    assert_eq!(installed().trim(), format!("kiln-cafe-1.0-b{first}.noarch"));

    // A second build fixes something; its advisory says so.
    let second = build(&farm).await;
    let add = |id: &str, package: &str| {
        run(farm
            .kiln()
            .args(["repo", "advisory", "add", "updates", "--id", id, "--type", "security", "--severity", "important"])
            .args(["--title", "kiln-cafe: the milk no longer curdles", "--description", "Fixes the steamer."])
            .args(["--package", package])
            .args(["--reference", "https://www.cve.org/CVERecord?id=CVE-2026-0001"]))
        .expect("kiln repo advisory add")
    };
    let (code, out, err) = add("KILN-2026-0001", "kiln-cafe");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("advisory KILN-2026-0001 in updates (revision 3): kiln-cafe-1.0-b{second}.noarch")),
        "{out}"
    );
    let (code, _, err) = add("KILN-2026-0001", "kiln-cafe");
    assert_ne!(code, 0);
    assert!(err.contains("already has an advisory KILN-2026-0001"), "{err}");
    let (code, _, err) = add("KILN-2026-0002", "kiln-cafe-9.9-1");
    assert_ne!(code, 0);
    assert!(err.contains("holds no binary RPM kiln-cafe-9.9-1"), "{err}");
    let (code, out, err) = run(farm.kiln().args(["repo", "advisory", "list", "updates"])).expect("list");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("KILN-2026-0001")
            && out.contains("Important")
            && out.contains(&format!("kiln-cafe-1.0-b{second}.noarch")),
        "{out}"
    );

    // dnf sees it for the installed package, and acts on it.
    let (code, out, err) = dnf.dnf(&["updateinfo", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let line = out.lines().find(|l| l.starts_with("KILN-2026-0001")).unwrap_or_else(|| panic!("{out}\n{err}"));
    assert!(line.contains("Important/Sec.") && line.contains(&format!("kiln-cafe-1.0-b{second}.noarch")), "{line}");
    let (code, out, err) = dnf.dnf(&["updateinfo", "info", "KILN-2026-0001"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("CVE-2026-0001") && out.contains("Fixes the steamer."), "{out}");
    let (code, out, err) = dnf.dnf(&["upgrade", "--security"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(installed().trim(), format!("kiln-cafe-1.0-b{second}.noarch"));

    // The served updateinfo is one gzip member, whole to Python's zlib.
    let repomd = reqwest::get(format!("{yum}/repodata/repomd.xml")).await.expect("get").text().await.expect("repomd");
    let href = repomd
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|h| h.ends_with("-updateinfo.xml.gz"))
        .unwrap_or_else(|| panic!("no updateinfo in {repomd}"));
    let file = farm.path("updateinfo.xml.gz");
    let bytes = reqwest::get(format!("{yum}/{href}")).await.expect("get").bytes().await.expect("gz");
    std::fs::write(&file, &bytes).expect("write");
    let xml = kiln_testing::python_gunzip(&file);
    // Taken back: the repository no longer carries it.
    let (code, out, err) =
        run(farm.kiln().args(["repo", "advisory", "remove", "updates", "KILN-2026-0001"])).expect("remove");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("advisory KILN-2026-0001 removed from updates"), "{out}");
    let (code, out, err) = dnf.dnf(&["updateinfo", "list", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("KILN-2026-0001"), "{out}");
    assert!(String::from_utf8_lossy(&xml).contains("<id>KILN-2026-0001</id>"), "{}", String::from_utf8_lossy(&xml));
}
