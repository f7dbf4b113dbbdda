//! Real package builds: a Debian source package built by a real master and
//! worker in a build root made by mmdebstrap from the host's own mirror,
//! in bubblewrap without network.

use kiln_core::{BuildState, StepState};
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{files_under, host_debian_mirror, run, wait_for, Farm};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const CONTROL: &str = "Source: kiln-hello
Section: misc
Priority: optional
Maintainer: kiln tests <kiln@localhost>
Build-Depends: debhelper-compat (= 13)
Standards-Version: 4.6.2
Rules-Requires-Root: no

Package: kiln-hello
Architecture: any
Depends: ${shlibs:Depends}, ${misc:Depends}
Description: greeting program built by kiln's tests
 A tiny C program.
";
const RULES: &str = "#!/usr/bin/make -f
%:
\tdh $@
override_dh_auto_build:
\t$(CC) -O2 -o kiln-hello hello.c
override_dh_auto_install:
\tinstall -D -m 0755 kiln-hello debian/kiln-hello/usr/bin/kiln-hello
";
const CHANGELOG: &str = "kiln-hello (1.0) bookworm; urgency=medium

  * Initial release.

 -- kiln tests <kiln@localhost>  Sun, 22 Nov 2026 00:00:00 +0000
";
/// A request to build kiln-hello, as a nightly or (`release`) a release build.
fn hello_request(release: bool) -> BuildRequestBody {
    BuildRequestBody {
        components: vec!["kiln-hello".into()],
        properties: if release { [("release".to_string(), "true".to_string())].into() } else { Default::default() },
        ..Default::default()
    }
}

const HELLO_C: &str = "#include <stdio.h>\nint main(void) { puts(\"hello from kiln\"); return 0; }\n";

/// A package whose configure step fails the way real ones do: its
/// config.log and test log say why, beside a note and a link to a secret.
const BROKEN_RULES: &str = "#!/usr/bin/make -f
%:
\tdh $@
override_dh_auto_configure:
\tmkdir -p obj/tests notes
\techo 'configure: error: no acceptable C compiler found' > obj/config.log
\techo 'FAIL: t1' > obj/tests/test-suite.log
\techo 'the compiler was missing' > notes/why.txt
\tln -s /etc/shadow notes/shadow.txt
\tfalse
";

/// The Debian source trees the deb tests build: kiln-hello, a slow one to
/// cancel, a library (a header) and a program that build-depends on it.
fn deb_sources() -> Vec<(String, String)> {
    // A library (a header, here) and a program that build-depends on it:
    // the program's build root gets the header from the farm's own repository.
    let greeting_control = CONTROL
        .replace("kiln-hello", "kiln-greeting")
        .replace("Package: kiln-greeting\nArchitecture: any", "Package: kiln-greeting-dev\nArchitecture: all");
    let greeting_rules = "#!/usr/bin/make -f\n%:\n\tdh $@\noverride_dh_auto_install:\n\tinstall -D -m 0644 kiln-greeting.h debian/kiln-greeting-dev/usr/include/kiln-greeting.h\n";
    let greeter_control = CONTROL
        .replace("kiln-hello", "kiln-greeter")
        .replace("debhelper-compat (= 13)", "debhelper-compat (= 13), kiln-greeting-dev");
    let greeter_c =
        "#include <stdio.h>\n#include <kiln-greeting.h>\nint main(void) { puts(KILN_GREETING); return 0; }\n";
    // A package whose build takes minutes, to cancel mid-build.
    let slow_control = CONTROL.replace("kiln-hello", "kiln-slow");
    let slow_rules = RULES.replace("$(CC) -O2", "sleep 300; $(CC) -O2");
    let slow_changelog = CHANGELOG.replace("kiln-hello", "kiln-slow");
    let sources: &[(&str, &str)] = &[
        ("src/kiln-hello/debian/control", CONTROL),
        ("src/kiln-hello/debian/rules", RULES),
        ("src/kiln-hello/debian/changelog", CHANGELOG),
        ("src/kiln-hello/debian/source/format", "3.0 (native)\n"),
        ("src/kiln-hello/hello.c", HELLO_C),
        ("src/kiln-slow/debian/control", &slow_control),
        ("src/kiln-slow/debian/rules", &slow_rules),
        ("src/kiln-slow/debian/changelog", &slow_changelog),
        ("src/kiln-slow/debian/source/format", "3.0 (native)\n"),
        ("src/kiln-slow/hello.c", HELLO_C),
        ("src/kiln-greeting/debian/control", &greeting_control),
        ("src/kiln-greeting/debian/rules", greeting_rules),
        ("src/kiln-greeting/debian/changelog", &CHANGELOG.replace("kiln-hello", "kiln-greeting")),
        ("src/kiln-greeting/debian/source/format", "3.0 (native)\n"),
        ("src/kiln-greeting/kiln-greeting.h", "#define KILN_GREETING \"greetings from the farm's repository\"\n"),
        ("src/kiln-greeter/debian/control", &greeter_control),
        ("src/kiln-greeter/debian/rules", &RULES.replace("kiln-hello", "kiln-greeter").replace("hello.c", "greeter.c")),
        ("src/kiln-greeter/debian/changelog", &CHANGELOG.replace("kiln-hello", "kiln-greeter")),
        ("src/kiln-greeter/debian/source/format", "3.0 (native)\n"),
        ("src/kiln-greeter/greeter.c", greeter_c),
        ("src/kiln-broken/debian/control", &CONTROL.replace("kiln-hello", "kiln-broken")),
        ("src/kiln-broken/debian/rules", BROKEN_RULES),
        ("src/kiln-broken/debian/changelog", &CHANGELOG.replace("kiln-hello", "kiln-broken")),
        ("src/kiln-broken/debian/source/format", "3.0 (native)\n"),
        ("src/kiln-broken/hello.c", HELLO_C),
    ];
    sources.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

/// Where the deb tests' workers keep build roots: one cache for the test
/// binary's farms (and for later runs), so the root is made once.
fn shared_root_cache() -> String {
    format!("{}/kiln-root-cache", env!("CARGO_TARGET_TMPDIR"))
}

/// A farm running the deb sources with one worker for `target`, whose
/// root cache is shared, as deployed: a root worker whose build code runs
/// sandboxed as the default build user.
async fn deb_farm(config: &str, sources: &[(&str, &str)], target: &str) -> Farm {
    let mut farm = Farm::new(KILN.as_ref(), config, sources);
    for (path, _) in sources.iter().filter(|(p, _)| p.ends_with("debian/rules")) {
        std::fs::set_permissions(farm.path(path), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    farm.start_master().await;
    farm.start_worker_with("w1", &[target], 1, &["--root-cache", &shared_root_cache(), "--default-build-user"]);
    farm.wait_for_workers(&["w1"]).await;
    farm
}

#[tokio::test(flavor = "multi_thread")]
async fn a_debian_source_tree_builds_into_debs_in_a_clean_cached_root() {
    let (mirror, suite) = host_debian_mirror().expect("the host's apt sources name a Debian mirror");
    let config = format!(
        r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "debian-{suite}-amd64"
family = "deb"
suite = "{suite}"
arch = "amd64"
mirror = "{mirror}"

[[component]]
name = "kiln-hello"
source = {{ path = "src/kiln-hello" }}

[[component]]
name = "kiln-slow"
source = {{ path = "src/kiln-slow" }}

[[component]]
name = "kiln-greeting"
source = {{ path = "src/kiln-greeting" }}

[[component]]
name = "kiln-greeter"
source = {{ path = "src/kiln-greeter" }}
depends_on = ["kiln-greeting"]

[[component]]
name = "kiln-broken"
source = {{ path = "src/kiln-broken" }}
artifacts_on_failure = ["notes/*.txt"]
"#
    );
    let owned = deb_sources();
    let sources: Vec<(&str, &str)> = owned.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let farm = deb_farm(&config, &sources, &format!("debian-{suite}-amd64")).await;
    // A tree that would have root hand /etc to the build user when its logs
    // are kept: the failure dir is a link to it.
    std::os::unix::fs::symlink("/etc", farm.path("src/kiln-broken/.kiln-failed")).expect("link");
    let client = farm.client();
    let body = hello_request;

    // A nightly build.
    let id = client.create_builds(&body(false)).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(900)).await;
    let logs = async |step: &str| client.log(id, step, 0).await.map(|c| c.data).unwrap_or_default();
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{b:?}\nroot:\n{}\ndeps:\n{}\nbuild:\n{}",
        logs("root").await,
        logs("deps").await,
        logs("build").await
    );
    let names: Vec<&str> = b.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["source", "root", "deps", "build"]);
    assert!(b.steps.iter().all(|s| s.state == StepState::Succeeded));
    let version = b.properties["version"].value.clone();
    assert!(version.starts_with("1.0+nightly") && version.ends_with(&format!(".{id}")), "{version}");
    let deb = format!("kiln-hello_{version}_amd64.deb");
    let artifact_names: Vec<&str> = b.artifacts.iter().map(|a| a.name.as_str()).collect();
    for wanted in [
        deb.as_str(),
        &format!("kiln-hello_{version}.dsc"),
        &format!("kiln-hello_{version}_amd64.changes"),
        "buildroot-packages.txt",
    ] {
        assert!(artifact_names.contains(&wanted), "{wanted} missing from {artifact_names:?}");
    }
    // The root cache is shared with the other tests' workers: whichever
    // build comes first makes the root, the others wait for it and use it.
    let first_root = logs("root").await;
    assert!(first_root.contains("making the") || first_root.contains("using the cached"), "{first_root}");

    let dest = farm.path("fetched");
    let (code, _, err) = run(farm.kiln().args(["fetch", &id.to_string()]).arg(&dest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let (code, info, _) = run(std::process::Command::new("dpkg-deb").arg("-I").arg(dest.join(&deb))).expect("dpkg-deb");
    assert_eq!(code, 0);
    assert!(info.contains("Package: kiln-hello") && info.contains(&format!("Version: {version}")), "{info}");
    let unpacked = farm.path("unpacked");
    let (code, _, _) =
        run(std::process::Command::new("dpkg-deb").arg("-x").arg(dest.join(&deb)).arg(&unpacked)).expect("dpkg-deb -x");
    assert_eq!(code, 0);
    let (code, out, _) =
        run(&mut std::process::Command::new(unpacked.join("usr/bin/kiln-hello"))).expect("run the program");
    assert_eq!((code, out.as_str()), (0, "hello from kiln\n"));
    let packages = std::fs::read_to_string(dest.join("buildroot-packages.txt")).expect("package list");
    assert!(packages.lines().any(|l| l.starts_with("debhelper=")), "the root's packages are recorded");

    // A release build reuses the cached root and keeps the plain version.
    let id2 = client.create_builds(&body(true)).await.expect("create").builds[0].id;
    let b2 = farm.wait_finished(id2, Duration::from_secs(600)).await;
    assert_eq!(b2.state, BuildState::Succeeded, "{b2:?}");
    assert_eq!(b2.properties["version"].value, "1.0");
    let root_log = client.log(id2, "root", 0).await.expect("log").data;
    assert!(root_log.contains("using the cached"), "{root_log}");
    assert!(root_log.contains("build root ready in") || root_log.contains("build root unpacked in"), "{root_log}");

    // A dependent builds against what its dependency just published: the
    // library lands in dev first, the program's root installs it from there.
    let created = client
        .create_builds(&BuildRequestBody {
            components: vec!["kiln-greeter".into(), "kiln-greeting".into()],
            ..Default::default()
        })
        .await
        .expect("create");
    let mut by_name = std::collections::HashMap::new();
    for b in &created.builds {
        by_name.insert(b.component.clone(), b.id);
    }
    let lib = farm.wait_finished(by_name["kiln-greeting"], Duration::from_secs(600)).await;
    assert_eq!(lib.state, BuildState::Succeeded, "{lib:?}");
    assert_eq!(lib.properties["published"].value, "2 to dev", "the .deb and the .dsc");
    let prog_id = by_name["kiln-greeter"];
    let prog = farm.wait_finished(prog_id, Duration::from_secs(600)).await;
    let deps_log = client.log(prog_id, "deps", 0).await.map(|c| c.data).unwrap_or_default();
    assert_eq!(prog.state, BuildState::Succeeded, "{prog:?}\n{deps_log}");
    assert!(deps_log.contains("build root uses repository dev: http://127.0.0.1:"), "{deps_log}");
    assert!(deps_log.contains("kiln-greeting-dev"), "{deps_log}");
    // Fetched with network, installed (maintainer scripts run) without.
    assert!(deps_log.contains("download only mode"), "{deps_log}");
    assert!(deps_log.contains("Setting up kiln-greeting-dev"), "{deps_log}");
    let pversion = prog.properties["version"].value.clone();
    let gdest = farm.path("greeter");
    let (code, _, err) = run(farm.kiln().args(["fetch", &prog_id.to_string()]).arg(&gdest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let gunpacked = farm.path("greeter-unpacked");
    let gdeb = gdest.join(format!("kiln-greeter_{pversion}_amd64.deb"));
    let (code, _, _) =
        run(std::process::Command::new("dpkg-deb").arg("-x").arg(&gdeb).arg(&gunpacked)).expect("dpkg-deb -x");
    assert_eq!(code, 0);
    let (code, out, _) =
        run(&mut std::process::Command::new(gunpacked.join("usr/bin/kiln-greeter"))).expect("run the program");
    assert_eq!((code, out.as_str()), (0, "greetings from the farm's repository\n"));

    // Cancel while dependencies install, and while the package builds: the
    // build ends cancelled and nothing of it survives (processes in the
    // sandbox included), nor its root.
    // (With the cached root the `root` step is an overlay mount: milliseconds.)
    for (step, source) in [("deps", "kiln-hello"), ("build", "kiln-slow")] {
        let created = client
            .create_builds(&BuildRequestBody { components: vec![source.into()], ..Default::default() })
            .await
            .expect("create");
        let cid = created.builds[0].id;
        farm.wait_build(cid, Duration::from_secs(300), |b| {
            b.steps.iter().any(|s| s.name == step && s.state == StepState::Running)
        })
        .await;
        assert!(
            kiln_testing::wait_for(Duration::from_secs(30), || async { !farm.build_processes(cid).is_empty() }).await,
            "the {step} step runs inside the build's root"
        );
        client.cancel(cid).await.expect("cancel");
        let c = farm.wait_finished(cid, Duration::from_secs(60)).await;
        assert_eq!(c.state, BuildState::Cancelled, "{c:?}");
        assert!(farm.build_processes(cid).is_empty(), "left running: {:?}", farm.build_processes(cid));
        assert!(!farm.path(&format!("workers/w1/builds/{cid}.scratch")).exists(), "the root is removed");
    }

    // GNU hello from the Debian archive, uploaded as its .dsc and files.
    let dsc = kiln_testing::fetch_debian_source(&mirror, &suite, "hello", &farm.path("archive")).expect("fetch hello");
    let (code, out, err) = run(farm.kiln().arg("upload").arg(&dsc).arg("--json")).expect("kiln upload");
    assert_eq!(code, 0, "{err}");
    let accepted: serde_json::Value = serde_json::from_str(&out).expect("json");
    let hid = accepted["builds"][0]["id"].as_i64().expect("build id");
    let hello = farm.wait_finished(hid, Duration::from_secs(900)).await;
    assert_eq!(
        hello.state,
        BuildState::Succeeded,
        "{hello:?}\n{}",
        client.log(hid, "build", 0).await.map(|c| c.data).unwrap_or_default()
    );
    let hversion = accepted["version"].as_str().expect("version").to_string();
    assert_eq!(hello.properties["version"].value, hversion);
    let hdeb = format!("hello_{hversion}_amd64.deb");
    assert!(hello.artifacts.iter().any(|a| a.name == hdeb), "{:?}", hello.artifacts);
    let hdest = farm.path("hello-debs");
    let (code, _, err) = run(farm.kiln().args(["fetch", &hid.to_string()]).arg(&hdest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let (code, info, _) =
        run(std::process::Command::new("dpkg-deb").arg("-I").arg(hdest.join(&hdeb))).expect("dpkg-deb");
    assert_eq!(code, 0);
    assert!(info.contains("Package: hello"), "{info}");

    // A build that fails in its build tree keeps that tree's logs (the
    // standard ones and the component's own), never what a link points at.
    let created = client
        .create_builds(&BuildRequestBody { components: vec!["kiln-broken".into()], ..Default::default() })
        .await
        .expect("create");
    let broken = farm.wait_finished(created.builds[0].id, Duration::from_secs(600)).await;
    assert_eq!(broken.state, BuildState::Failed, "{broken:?}");
    assert!(broken.reason.as_deref().is_some_and(|r| r.starts_with("step build ")), "{broken:?}");
    let names: Vec<&str> = broken.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["failed-notes_why.txt", "failed-obj_config.log", "failed-obj_tests_test-suite.log"]);
    let bdest = farm.path("broken");
    let (code, _, err) = run(farm.kiln().args(["fetch", &broken.id.to_string()]).arg(&bdest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let config_log = std::fs::read_to_string(bdest.join("failed-obj_config.log")).expect("config.log");
    assert_eq!(config_log, "configure: error: no acceptable C compiler found\n");
    let build_log = client.log(broken.id, "build", 0).await.map(|c| c.data).unwrap_or_default();
    assert!(build_log.contains("kept 3 log file(s) of the failed build"), "{build_log}");
    use std::os::unix::fs::MetadataExt;
    for host_file in ["/etc", "/etc/shadow", "/etc/passwd"] {
        assert_eq!(std::fs::metadata(host_file).expect("host file").uid(), 0, "{host_file} stays root's");
    }

    // Nothing is left on the worker: no work or scratch dirs, no mounts.
    let builds = farm.path("workers/w1/builds");
    assert_eq!(std::fs::read_dir(&builds).expect("builds dir").count(), 0);
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(!mounts.contains(&farm.dir.path().display().to_string()), "no mount left under the farm");
}

/// sbuild's unshare mode over the shared cached tarball; the program's
/// build-dependency comes from a target's extra repository (added by a
/// config reload), since the release build's own channel lacks it.
#[tokio::test(flavor = "multi_thread")]
async fn sbuild_builds_in_its_unshare_root_with_an_extra_repository() {
    let (mirror, suite) = host_debian_mirror().expect("the host's apt sources name a Debian mirror");
    let target = format!("debian-{suite}-sbuild");
    let config = format!(
        r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "{target}"
family = "deb"
suite = "{suite}"
arch = "amd64"
mirror = "{mirror}"
executor = "sbuild"

[[component]]
name = "kiln-greeting"
source = {{ path = "src/kiln-greeting" }}

[[component]]
name = "kiln-greeter"
source = {{ path = "src/kiln-greeter" }}
"#
    );
    let owned = deb_sources();
    let sources: Vec<(&str, &str)> =
        owned.iter().filter(|(p, _)| p.starts_with("src/kiln-greet")).map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let farm = deb_farm(&config, &sources, &target).await;
    let client = farm.client();
    let request = |component: &str, release: bool| BuildRequestBody {
        components: vec![component.into()],
        properties: if release { [("release".to_string(), "true".to_string())].into() } else { Default::default() },
        ..Default::default()
    };
    let log_of = async |id: i64, step: &str| client.log(id, step, 0).await.map(|c| c.data).unwrap_or_default();

    // The library, a nightly: published to dev.
    let lib_id = client.create_builds(&request("kiln-greeting", false)).await.expect("create").builds[0].id;
    let lib = farm.wait_finished(lib_id, Duration::from_secs(900)).await;
    assert_eq!(lib.state, BuildState::Succeeded, "{lib:?}\n{}", log_of(lib_id, "build").await);
    let names: Vec<&str> = lib.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["source", "root", "build"]);
    let build_log = log_of(lib_id, "build").await;
    assert!(build_log.contains("chroot-mode=unshare") || build_log.contains("Status: successful"), "{build_log}");
    assert_eq!(lib.properties["published"].value, "2 to dev", "the .deb and the .dsc");

    // dev's repository as an extra repository of the target, trusted by
    // its key, through a config reload.
    let base = farm.url();
    let key = reqwest::get(format!("{base}/repos/dev/key.asc")).await.expect("key").text().await.expect("key");
    std::fs::write(farm.path("dev.asc"), key).expect("write key");
    let before = client.status().await.expect("status").config_generation;
    let written = std::fs::read_to_string(&farm.config).expect("read config");
    let with_repo = written.replace(
        "executor = \"sbuild\"",
        &format!(
            "executor = \"sbuild\"\nrepositories = [{{ url = \"{base}/repos/dev/apt\", suite = \"{suite}\", key = \"dev.asc\" }}]"
        ),
    );
    std::fs::write(&farm.config, with_repo).expect("write config");
    farm.hup_master();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            client.status().await.is_ok_and(|s| s.config_generation > before)
        })
        .await,
        "the master reloads its config:\n{}",
        farm.master_log()
    );

    // A release build of the program: its channel (stable) has no
    // kiln-greeting-dev; the extra repository does.
    let prog_id = client.create_builds(&request("kiln-greeter", true)).await.expect("create").builds[0].id;
    let prog = farm.wait_finished(prog_id, Duration::from_secs(900)).await;
    let prog_log = log_of(prog_id, "build").await;
    assert_eq!(prog.state, BuildState::Succeeded, "{prog:?}\n{prog_log}");
    assert!(
        prog_log.contains(&format!("build root uses repository extra-1: {base}/repos/dev/apt {suite} main")),
        "{prog_log}"
    );
    assert!(prog_log.contains("kiln-greeting-dev"), "{prog_log}");
    assert_eq!(prog.properties["version"].value, "1.0");
    let dest = farm.path("greeter");
    let (code, _, err) = run(farm.kiln().args(["fetch", &prog_id.to_string()]).arg(&dest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let packages = std::fs::read_to_string(dest.join("buildroot-packages.txt")).expect("package list");
    assert!(packages.lines().any(|l| l.starts_with("kiln-greeting-dev=1.0+nightly")), "{packages}");
    let unpacked = farm.path("greeter-unpacked");
    let (code, _, err) = run(std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(dest.join("kiln-greeter_1.0_amd64.deb"))
        .arg(&unpacked))
    .expect("dpkg-deb");
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&mut std::process::Command::new(unpacked.join("usr/bin/kiln-greeter"))).expect("run it");
    assert_eq!(out.trim(), "greetings from the farm's repository");
    // sbuild unpacked its root in the build's scratch dir, removed with it.
    for id in [lib_id, prog_id] {
        assert!(!farm.path(&format!("workers/w1/builds/{id}.scratch")).exists(), "build {id} left its scratch dir");
    }
}

const SPEC: &str = "Name:           kiln-hello
Version:        1.0
Release:        1%{?dist}
Summary:        Greeting program built by kiln's tests
License:        MIT
Source0:        hello.c

%description
A tiny C program.

%prep
cp %{SOURCE0} .

%build
cc -O2 -o kiln-hello hello.c

%install
install -D -m 0755 kiln-hello %{buildroot}%{_bindir}/kiln-hello
install -D -m 0644 hello.c %{buildroot}/usr/src/debug/kiln-hello/hello.c

%files
%{_bindir}/kiln-hello

%package debuginfo
Summary:        Debug information for kiln-hello

%description debuginfo
The program's source, as a debugger wants it.

%files debuginfo
/usr/src/debug/kiln-hello/hello.c
";

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_builds_into_rpms_with_rpmbuild_in_a_sandbox() {
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "el-9-x86_64"
family = "rpm"
arch = "x86_64"

[[component]]
name = "kiln-hello"
source = { path = "src/kiln-hello" }

[[component]]
name = "kiln-tree"
source = { path = "src/kiln-tree" }
before = [{ name = "stamp", run = "echo 'made before the pipeline' > STAMP" }]
after = [{ name = "list", run = "ls .kiln-out; id -u" }]

# dev signs with a generated RSA 4096 key (the default), stable with Ed25519.
[[channel]]
name = "dev"
accepts = "nightly"
promote_to = ["stable"]

[[channel]]
name = "stable"
accepts = "release"
key_type = "ed25519"
"#;
    // kiln-tree's spec names a Source0 tarball that is not in the tree:
    // kiln makes it from the tree.
    let tree_spec = SPEC
        .replace("kiln-hello", "kiln-tree")
        .replace("Source0:        hello.c", "Source0:        https://example.org/dl/%{name}-%{version}.tar.gz")
        .replace("cp %{SOURCE0} .", "%setup -q");
    let sources: &[(&str, &str)] = &[
        ("src/kiln-hello/rpm/kiln-hello.spec", SPEC),
        ("src/kiln-hello/rpm/hello.c", HELLO_C),
        ("src/kiln-hello/debian/changelog", CHANGELOG),
        ("src/kiln-tree/kiln-tree.spec", &tree_spec),
        ("src/kiln-tree/hello.c", HELLO_C),
    ];
    // As deployed: the spec is read and run sandboxed, as the build user.
    let mut farm = Farm::new(KILN.as_ref(), config, sources);
    farm.start_master().await;
    farm.start_worker_with("w1", &["el-9-x86_64"], 1, &["--default-build-user"]);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let body = hello_request;
    let id = client.create_builds(&body(false)).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(120)).await;
    let build_log = client.log(id, "build", 0).await.map(|c| c.data).unwrap_or_default();
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}\n{build_log}");
    let version = b.properties["version"].value.clone();
    assert!(version.starts_with("1.0-1~nightly") && version.ends_with(&format!(".{id}")), "{version}");
    let rpm = format!("kiln-hello-{version}.x86_64.rpm");
    let names: Vec<&str> = b.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert!(
        names.contains(&rpm.as_str()) && names.contains(&format!("kiln-hello-{version}.src.rpm").as_str()),
        "{names:?}"
    );
    let dest = farm.path("fetched");
    let (code, _, err) = run(farm.kiln().args(["fetch", &id.to_string()]).arg(&dest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let (code, info, _) =
        run(std::process::Command::new("rpm").args(["-qip", "--nosignature"]).arg(dest.join(&rpm))).expect("rpm -qip");
    assert_eq!(code, 0);
    assert!(info.contains("Name        : kiln-hello"), "{info}");
    let (_, files, _) =
        run(std::process::Command::new("rpm").args(["-qlp", "--nosignature"]).arg(dest.join(&rpm))).expect("rpm -qlp");
    assert!(files.lines().any(|f| f == "/usr/bin/kiln-hello"), "{files}");

    let tree_request = BuildRequestBody { components: vec!["kiln-tree".into()], ..Default::default() };
    let tid = client.create_builds(&tree_request).await.expect("create").builds[0].id;
    let t = farm.wait_finished(tid, Duration::from_secs(120)).await;
    let source_log = client.log(tid, "source", 0).await.map(|c| c.data).unwrap_or_default();
    assert_eq!(t.state, BuildState::Succeeded, "{t:?}\n{source_log}");
    let names: Vec<&str> = t.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["stamp", "source", "build", "list"], "before and after wrap the pipeline");
    let list_log = client.log(tid, "list", 0).await.map(|c| c.data).unwrap_or_default();
    assert!(
        list_log.lines().any(|l| l.starts_with("kiln-tree-1.0-1~nightly") && l.ends_with(".x86_64.rpm")),
        "{list_log}"
    );
    assert!(
        source_log.contains("making kiln-tree-1.0.tar.gz from the source tree (top directory kiln-tree-1.0/)"),
        "{source_log}"
    );
    let tversion = t.properties["version"].value.clone();
    let tdest = farm.path("tree-fetched");
    let (code, _, err) = run(farm.kiln().args(["fetch", &tid.to_string()]).arg(&tdest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let (_, listed, _) = run(std::process::Command::new("rpm")
        .args(["-qlp", "--nosignature"])
        .arg(tdest.join(format!("kiln-tree-{tversion}.src.rpm"))))
    .expect("rpm -qlp");
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["kiln-tree-1.0.tar.gz", "kiln-tree.spec"], "{listed}");
    let (_, files, _) = run(std::process::Command::new("rpm")
        .args(["-qlp", "--nosignature"])
        .arg(tdest.join(format!("kiln-tree-{tversion}.x86_64.rpm"))))
    .expect("rpm -qlp");
    assert!(files.lines().any(|f| f == "/usr/bin/kiln-tree"), "{files}");

    let id2 = client.create_builds(&body(true)).await.expect("create").builds[0].id;
    let b2 = farm.wait_finished(id2, Duration::from_secs(120)).await;
    assert_eq!(b2.state, BuildState::Succeeded, "{b2:?}");
    assert_eq!(b2.properties["version"].value, "1.0-1");

    // Published: the nightly into dev's YUM repository, the release into
    // stable's, each RPM signed with its channel's key.
    // Each has its debug information beside it.
    assert_eq!(b.properties["published"].value, "2 to dev");
    assert_eq!(b2.properties["published"].value, "2 to stable");
    let base = farm.url();
    let yum = |channel: &str| format!("{base}/repos/{channel}/yum/el-9-x86_64");
    let rpmdb = farm.path("rpmdb");
    let rpm_cmd = || {
        let mut c = std::process::Command::new("rpm");
        c.arg("--dbpath").arg(&rpmdb);
        c
    };
    assert_eq!(run(rpm_cmd().arg("--initdb")).expect("rpm --initdb").0, 0);
    let dev_key = farm.path("dev-key.asc");
    std::fs::write(
        &dev_key,
        reqwest::get(format!("{base}/repos/dev/key.asc")).await.expect("key").bytes().await.expect("key"),
    )
    .expect("write key");
    let published = farm.path("published.rpm");
    let pkg = client.packages("dev", Some("kiln-hello"), Some("el-9-x86_64")).await.expect("list");
    assert_eq!(pkg.len(), 1, "{pkg:?}");
    let bytes =
        reqwest::get(format!("{base}/repos/dev/{}", pkg[0].path)).await.expect("get").bytes().await.expect("rpm");
    std::fs::write(&published, &bytes).expect("write rpm");
    let (code, out, _) = run(rpm_cmd().arg("-K").arg(&published)).expect("rpm -K");
    assert_ne!(code, 0, "without the key the signature cannot be checked: {out}");
    assert_eq!(run(rpm_cmd().arg("--import").arg(&dev_key)).expect("rpm --import").0, 0);
    let (code, out, err) = run(rpm_cmd().arg("-K").arg(&published)).expect("rpm -K");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim_end().ends_with("digests signatures OK"), "{out}");

    // dnf reads the repository with repo_gpgcheck (repomd.xml.asc) and gpgcheck
    // on, with either kind of key.
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let dnf = |repo: &str, key_channel: &str| {
        // A fresh cache each time: dnf would otherwise reuse metadata it already has.
        let n = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = farm.path(&format!("dnf-{n}"));
        std::fs::create_dir_all(dir.join("repos.d")).expect("dnf dirs");
        std::fs::create_dir_all(dir.join("root")).expect("dnf dirs");
        run(std::process::Command::new("dnf")
            .args(["-y", "-q", "--releasever=9", "--disableplugin=*", "--setopt=skip_if_unavailable=False"])
            .arg(format!("--installroot={}", dir.join("root").display()))
            .arg(format!("--setopt=reposdir={}", dir.join("repos.d").display()))
            .arg(format!("--setopt=cachedir={}", dir.join("cache").display()))
            .arg(format!("--repofrompath=kiln,{}", if repo.contains('/') { repo.to_string() } else { yum(repo) }))
            .args(["--setopt=kiln.gpgcheck=1", "--setopt=kiln.repo_gpgcheck=1"])
            .arg(format!("--setopt=kiln.gpgkey={base}/repos/{key_channel}/key.asc"))
            .args(["repoquery", "--repo", "kiln", "--qf", "%{name} %{version}-%{release} %{arch}"]))
        .expect("dnf")
    };
    let (code, out, err) = dnf("dev", "dev");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.lines().any(|l| l == format!("kiln-hello {version} x86_64")), "{out}");
    // Each metadata .xml.gz is one gzip member, whole to a reader that
    // stops after the first (Python's zlib).
    let repomd =
        reqwest::get(format!("{}/repodata/repomd.xml", yum("dev"))).await.expect("get").text().await.expect("repomd");
    let gzs: Vec<&str> =
        repomd.split("href=\"").skip(1).filter_map(|s| s.split('"').next()).filter(|h| h.ends_with(".gz")).collect();
    assert!(gzs.len() >= 3, "{repomd}");
    for href in gzs {
        let file = farm.path("metadata.gz");
        let bytes = reqwest::get(format!("{}/{href}", yum("dev"))).await.expect("get").bytes().await.expect("gz");
        std::fs::write(&file, &bytes).expect("write");
        assert!(kiln_testing::python_gunzip(&file).starts_with(b"<?xml"), "{href}");
    }
    // Debug information is in the target's -debuginfo repository only.
    assert!(!out.contains("kiln-hello-debuginfo"), "{out}");
    let (code, out, err) = dnf(&format!("{}-debuginfo", yum("dev")), "dev");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.lines().any(|l| l == format!("kiln-hello-debuginfo {version} x86_64")), "{out}");
    assert!(out.lines().all(|l| l.split(' ').next().is_some_and(|n| n.ends_with("-debuginfo"))), "{out}");
    let (code, out, err) = dnf("stable", "stable");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.lines().any(|l| l == "kiln-hello 1.0-1 x86_64"), "{out}");
    let (code, out, err) = dnf("stable", "dev");
    assert_ne!(code, 0, "stable's metadata is not accepted under dev's key: {out}");
    assert!(err.contains("GPG signature"), "{err}");

    // Promotion re-signs with the target channel's key.
    let promoted = client
        .promote(&kiln_proto::api::PromoteBody {
            name: "kiln-hello".into(),
            version: version.clone(),
            from: "dev".into(),
            to: "stable".into(),
            replace: false,
        })
        .await
        .expect("promote");
    assert!(promoted.message.contains("promoted 1 file(s)"), "{promoted:?}");
    let (code, out, err) = dnf("stable", "stable");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.lines().any(|l| l == format!("kiln-hello {version} x86_64")), "{out}");
    let stable = client.packages("stable", Some("kiln-*"), None).await.expect("list");
    let moved = stable.iter().find(|p| p.version == version).expect("promoted package");
    let bytes =
        reqwest::get(format!("{base}/repos/stable/{}", moved.path)).await.expect("get").bytes().await.expect("rpm");
    std::fs::write(&published, &bytes).expect("write rpm");
    let (code, out, _) = run(rpm_cmd().arg("-K").arg(&published)).expect("rpm -K");
    assert_ne!(code, 0, "signed by stable's key, which this rpmdb does not trust: {out}");
}

/// A source RPM made by rpmbuild -bs from the test spec.
fn make_srpm(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    std::fs::write(dir.join("src/kiln-hello.spec"), SPEC).expect("spec");
    std::fs::write(dir.join("src/hello.c"), HELLO_C).expect("source");
    let (code, _, err) = run(std::process::Command::new("rpmbuild")
        .arg("-bs")
        .arg("--define")
        .arg(format!("_topdir {}", dir.join("top").display()))
        .arg("--define")
        .arg(format!("_sourcedir {}", dir.join("src").display()))
        .arg(dir.join("src/kiln-hello.spec")))
    .expect("rpmbuild -bs");
    assert_eq!(code, 0, "{err}");
    dir.join("top/SRPMS/kiln-hello-1.0-1.src.rpm")
}

/// The README's way: `kiln master --config examples/farm.toml` from the
/// checkout, a relative config path. An upload's kept directory is found
/// (it was once looked for under the config's directory twice).
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_builds_on_a_master_started_with_a_relative_config_path() {
    let config = "[[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\n[[target]]\nname = \"el-9-x86_64\"\nfamily = \"rpm\"\n";
    let mut farm = Farm::new(KILN.as_ref(), config, &[]);
    farm.start_master_with_relative_config().await;
    farm.start_worker("w1", &["el-9-x86_64"], 1);
    farm.wait_for_workers(&["w1"]).await;
    let srpm = make_srpm(&farm.path("pkg"));
    let (code, out, err) = run(farm.kiln().arg("upload").arg(&srpm).args(["--json"])).expect("kiln upload");
    assert_eq!(code, 0, "{err}");
    let accepted: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = accepted["builds"][0]["id"].as_i64().expect("build id");
    let b = farm.wait_finished(id, Duration::from_secs(120)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert!(b.artifacts.iter().any(|a| a.name == "kiln-hello-1.0-1.x86_64.rpm"), "{:?}", b.artifacts);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_checked_built_or_rejected_with_the_reason() {
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "el-9-x86_64"
family = "rpm"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"
mirror = "http://deb.example.invalid/debian"
"#;
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["el-9-x86_64"], 1).await;

    // A source RPM: accepted, built by the standard rpm pipeline.
    let srpm = make_srpm(&farm.path("pkg"));
    let (code, out, err) = run(farm.kiln().arg("upload").arg(&srpm).args(["--json"])).expect("kiln upload");
    assert_eq!(code, 0, "{err}");
    let accepted: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((accepted["source"].as_str(), accepted["version"].as_str()), (Some("kiln-hello"), Some("1.0-1")));
    let id = accepted["builds"][0]["id"].as_i64().expect("build id");
    let b = farm.wait_finished(id, Duration::from_secs(120)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.properties["version"].value, "1.0-1", "an upload keeps its version");
    assert!(b.artifacts.iter().any(|a| a.name == "kiln-hello-1.0-1.x86_64.rpm"));

    // The web's Rebuild button builds the same upload again (it used to be
    // refused: "property `upload` is reserved").
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let (cookie, csrf) = farm.web_login(&http, &farm.admin_token(), &format!("/builds/{id}"), "admin").await;
    let answer = http
        .post(format!("{}/builds/{id}/rebuild", farm.url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("rebuild");
    assert_eq!(answer.status().as_u16(), 303, "{:?}", answer.text().await);
    let location = answer.headers()["location"].to_str().expect("location").to_string();
    let again: i64 = location.trim_start_matches("/builds/").parse().expect("the new build's page");
    assert_ne!(again, id);
    let rebuilt = farm.wait_finished(again, Duration::from_secs(120)).await;
    assert_eq!(rebuilt.properties["upload"].value, b.properties["upload"].value, "the same upload");
    assert_eq!(rebuilt.properties["version"].value, "1.0-1");
    assert!(rebuilt.steps.iter().all(|s| s.state == StepState::Succeeded), "{rebuilt:?}");
    assert!(rebuilt.artifacts.iter().any(|a| a.name == "kiln-hello-1.0-1.x86_64.rpm"));
    // It built; publishing it follows the channel's rule that a version is
    // published once (rpmbuild stamps the build time, so the bytes differ).
    match rebuilt.state {
        BuildState::Succeeded => {}
        _ => assert!(
            rebuilt
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("kiln-hello 1.0-1 (x86_64) is already published in dev")),
            "{rebuilt:?}"
        ),
    }

    // The same version again: refused.
    let (code, _, err) = run(farm.kiln().arg("upload").arg(&srpm)).expect("kiln upload");
    assert_eq!(code, 1);
    assert!(err.contains("version 1.0-1 of kiln-hello was already built on el-9-x86_64"), "{err}");

    // A .dsc whose files do not match, then one with a file missing, one
    // that is malformed, and one for a target that does not exist.
    let dir = farm.path("dsc");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("x_1.0.tar.xz"), b"not what the dsc says").expect("write");
    let dsc = "Source: xy\nVersion: 1.0\nChecksums-Sha256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 21 x_1.0.tar.xz\nFiles:\n d41d8cd98f00b204e9800998ecf8427e 21 x_1.0.tar.xz\n d41d8cd98f00b204e9800998ecf8427e 0 x_1.0.orig.tar.gz\n";
    std::fs::write(dir.join("x_1.0.dsc"), dsc).expect("write");
    std::fs::write(dir.join("bad_1.0.dsc"), "this is not a control file\n").expect("write");
    let upload = |file: &str, extra: &[&str]| {
        run(farm.kiln().arg("upload").arg(dir.join(file)).args(extra)).expect("kiln upload")
    };
    let (code, _, err) = upload("x_1.0.dsc", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("x_1.0.tar.xz: SHA256 checksum mismatch"), "{err}");
    assert!(err.contains("x_1.0.tar.xz: MD5 checksum mismatch"), "{err}");
    assert!(err.contains("missing file x_1.0.orig.tar.gz (listed in x_1.0.dsc)"), "{err}");
    assert!(err.contains("HTTP 422"), "{err}");
    let (code, _, err) = upload("bad_1.0.dsc", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("bad_1.0.dsc: malformed control file"), "{err}");
    let (code, _, err) = run(farm.kiln().arg("upload").arg(&srpm).args(["--target", "win-11"])).expect("kiln upload");
    assert_eq!(code, 1);
    assert!(err.contains("unknown target \"win-11\"; known targets: el-9-x86_64, debian-12-amd64"), "{err}");
    // The same rejected name twice: kept twice, nothing crashes.
    let (code, _, _) = upload("x_1.0.dsc", &[]);
    assert_eq!(code, 1);

    // Every rejection is kept, under a name that never clashes, with its reason.
    let rejected = farm.path("data/rejected");
    let mut kept: Vec<String> = std::fs::read_dir(&rejected)
        .expect("rejected dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["bad_1.0.dsc", "kiln-hello-1.0-1.src.rpm", "kiln-hello-1.0-1.src.rpm.1", "x_1.0.dsc", "x_1.0.dsc.1"]
    );
    let reason = std::fs::read_to_string(rejected.join("x_1.0.dsc/REASON")).expect("reason");
    assert!(reason.contains("missing file x_1.0.orig.tar.gz"), "{reason}");
    assert!(rejected.join("x_1.0.dsc.1/x_1.0.tar.xz").exists());
    assert_eq!(files_under(&farm.path("data/incoming")), 0, "nothing stays in incoming");
    // No build was made of any rejected upload (the two are the upload's and its rebuild).
    let page = farm.client().builds(&Default::default()).await.expect("builds");
    assert_eq!(page.builds.len(), 2);
}
