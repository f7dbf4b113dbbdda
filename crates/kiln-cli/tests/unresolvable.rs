//! Build dependencies checked before a build goes to a worker, on real
//! processes, a real Debian archive (the host's mirror) and Debian's own
//! solver: a build that needs a package nothing provides waits as
//! `unresolvable`, naming it, and never reaches a worker; once a component
//! publishes that package into the channel its build root reads, it is
//! checked again and builds.

use kiln_core::BuildState;
use kiln_testing::{host_debian_mirror, run, Farm};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A native source package: `binary` (arch all, empty) built with debhelper.
/// Its changelog's head is UNRELEASED, so its nightlies are versioned
/// below 1.0 (`1.0~nightly…`).
fn native_tree(dir: &str, name: &str, binary: &str, build_depends: &str) -> Vec<(String, String)> {
    let control = format!(
        "Source: {name}\nSection: devel\nPriority: optional\nMaintainer: Ann Packager <ann@example.org>\n\
         Build-Depends: debhelper-compat (= 13){build_depends}\nStandards-Version: 4.6.2\nRules-Requires-Root: no\n\n\
         Package: {binary}\nArchitecture: all\nDepends: ${{misc:Depends}}\nDescription: part of kiln's tests\n \
         A package kiln's tests build.\n"
    );
    let changelog = format!(
        "{name} (1.0) UNRELEASED; urgency=medium\n\n  * Initial release.\n\n \
         -- Ann Packager <ann@example.org>  Sun, 22 Nov 2026 00:00:00 +0000\n"
    );
    [
        ("debian/control", control),
        ("debian/changelog", changelog),
        ("debian/rules", "#!/usr/bin/make -f\n%:\n\tdh $@\n".to_string()),
        ("debian/source/format", "3.0 (native)\n".to_string()),
        ("README", format!("{name}\n")),
    ]
    .into_iter()
    .map(|(p, t)| (format!("{dir}/{p}"), t))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_build_waits_naming_what_is_missing_until_a_component_publishes_it() {
    let (_, suite) = host_debian_mirror().expect("the host's apt sources name a Debian mirror");
    let config = format!(
        r#"
[master]
changelog_maintainer = "Example Builds <builds@example.org>"

[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "debian-{suite}-amd64"
family = "deb"
suite = "{suite}"
arch = "amd64"
mirror = "host"

[[component]]
name = "kiln-needy"
source = {{ path = "src/kiln-needy" }}

[[component]]
name = "kiln-provider"
source = {{ path = "src/kiln-provider" }}
"#
    );
    let mut files = native_tree("src/kiln-needy", "kiln-needy", "kiln-needy", ", kiln-provided-dev (>= 0.9)");
    files.extend(native_tree("src/kiln-provider", "kiln-provider", "kiln-provided-dev", ""));
    let sources: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let mut farm = Farm::new(KILN.as_ref(), &config, &sources);
    for dir in ["src/kiln-needy", "src/kiln-provider"] {
        std::fs::set_permissions(
            farm.path(&format!("{dir}/debian/rules")),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
    }
    farm.start_master().await;
    let cache = format!("{}/kiln-root-cache", env!("CARGO_TARGET_TMPDIR"));
    let target = format!("debian-{suite}-amd64");
    farm.start_worker_with("w1", &[&target], 1, &["--root-cache", &cache, "--default-build-user"]);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();

    let (code, out, err) = run(farm.kiln().args(["build", "kiln-needy"])).expect("kiln build");
    assert_eq!(code, 0, "{err}");
    let needy: i64 = out.split('\t').next().and_then(|id| id.trim().parse().ok()).expect("build id");
    // The master fetches the archive's lists (verified) and solves: it may take a while the first time.
    let waiting = farm
        .wait_build(needy, Duration::from_secs(600), |b| {
            b.waiting.as_ref().is_some_and(|w| w.kind() == "unresolvable") || b.state != BuildState::Queued
        })
        .await;
    assert_eq!(waiting.state, BuildState::Queued, "{waiting:?}\n{}", farm.master_log());
    let why = waiting.waiting.clone().expect("waiting");
    assert_eq!(
        why,
        kiln_core::schedule::Waiting::Unresolvable {
            missing: vec!["kiln-provided-dev (>= 0.9)".into()],
            message: "its build dependencies cannot be met: nothing provides kiln-provided-dev (>= 0.9)".into()
        }
    );
    // It never reached a worker.
    assert!(waiting.started_at.is_none() && waiting.worker.is_none() && waiting.steps.is_empty(), "{waiting:?}");
    let (_, shown, _) = run(farm.kiln().args(["show", &needy.to_string()])).expect("kiln show");
    assert!(
        shown.contains("waiting:      its build dependencies cannot be met: nothing provides kiln-provided-dev"),
        "{shown}"
    );
    let (_, listed, _) = run(farm.kiln().args(["builds", "--state", "queued"])).expect("kiln builds");
    assert!(
        listed.lines().any(|l| l.starts_with(&format!("#{needy} ")) && l.ends_with("waits: unresolvable")),
        "{listed}"
    );

    // The provider publishes kiln-provided-dev into dev, which needy's build root reads.
    let provider =
        client.create_builds(&kiln_testing::request(&["kiln-provider"], &[])).await.expect("create").builds[0].id;
    let provided = farm.wait_finished(provider, Duration::from_secs(900)).await;
    assert_eq!(provided.state, BuildState::Succeeded, "{provided:?}");
    let built = farm.wait_finished(needy, Duration::from_secs(900)).await;
    assert_eq!(built.state, BuildState::Succeeded, "{built:?}");
    assert!(built.started_at >= provided.finished_at, "it started once the provider was published");
    let packages = client.log(needy, "deps", 0).await.map(|c| c.data).unwrap_or_default();
    assert!(packages.contains("kiln-provided-dev"), "its build root installed the published package:\n{packages}");
}
