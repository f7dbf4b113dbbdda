//! Source trees as packaging teams keep them, built by a real master and
//! worker: `3.0 (quilt)` packages in git the git-buildpackage way (the
//! upstream tarball from a pristine-tar branch or an upstream tag, the
//! patches unapplied), a quilt tree with no upstream history, and lintian
//! over what kiln makes of them.

use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{git, host_debian_mirror, host_debian_sources, run, Farm};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn write_all(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(&p, text).expect("write");
        if path.ends_with("debian/rules") {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        }
    }
}

/// The `debian/` of a source package `name` at `version` with one binary
/// package, as a careful maintainer writes it (lintian has nothing to say).
fn debian_dir(
    name: &str,
    version: &str,
    binary: &str,
    arch: &str,
    build_depends: &str,
    rules: &str,
) -> Vec<(String, String)> {
    let control = format!(
        "Source: {name}\nSection: devel\nPriority: optional\nMaintainer: Ann Packager <ann@example.org>\n\
         Build-Depends: debhelper-compat (= 13){build_depends}\nStandards-Version: 4.6.2\nRules-Requires-Root: no\n\n\
         Package: {binary}\nArchitecture: {arch}\nDepends: ${{misc:Depends}}{}\nDescription: part of kiln's packaging tests\n \
         A package kiln's tests build from a quilt tree.\n",
        if arch == "any" { ", ${shlibs:Depends}" } else { "" }
    );
    let changelog = format!(
        "{name} ({version}) bookworm; urgency=medium\n\n  * Initial release. (Closes: #1000001)\n\n \
         -- Ann Packager <ann@example.org>  Sun, 22 Nov 2026 00:00:00 +0000\n"
    );
    let copyright = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {name}\n\n\
         Files: *\nCopyright: 2026 Ann Packager <ann@example.org>\nLicense: MIT\n Permission is hereby granted, free of \
         charge, to any person obtaining a copy of this software, to deal in it without restriction.\n"
    );
    [
        ("debian/control", control),
        ("debian/changelog", changelog),
        ("debian/copyright", copyright),
        ("debian/rules", rules.to_string()),
        ("debian/source/format", "3.0 (quilt)\n".to_string()),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_string(), t))
    .collect()
}

const LIB_RULES: &str = "#!/usr/bin/make -f\n%:\n\tdh $@\noverride_dh_auto_install:\n\
                         \tinstall -D -m 0644 kiln-greeting.h debian/kiln-quiltlib-dev/usr/include/kiln-greeting.h\n";
const APP_RULES: &str = "#!/usr/bin/make -f\nexport DEB_BUILD_MAINT_OPTIONS = hardening=+all\n%:\n\tdh $@\n\
                         override_dh_auto_build:\n\t$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o kiln-quiltapp app.c\n\
                         override_dh_auto_install:\n\tinstall -D -m 0755 kiln-quiltapp debian/kiln-quiltapp/usr/bin/kiln-quiltapp\n";
/// The library's Debian patch, kept unapplied in the tree as gbp keeps it.
const LOUDER: &str = "Description: Greet louder\nAuthor: Ann Packager <ann@example.org>\nForwarded: not-needed\n\
                      --- a/kiln-greeting.h\n+++ b/kiln-greeting.h\n@@ -1 +1 @@\n\
                      -#define KILN_GREETING \"hello from upstream\"\n+#define KILN_GREETING \"HELLO FROM THE PATCHED LIBRARY\"\n";

/// A repository with upstream's history tagged `upstream/VERSION` and the
/// packaging committed on top; with `pristine` also the tarball upstream
/// released, committed to a pristine-tar branch. Returns the repository
/// and (with `pristine`) that tarball's bytes.
fn gbp_repo(
    dir: &Path,
    name: &str,
    version: &str,
    upstream: &[(&str, &str)],
    debian: &[(String, String)],
    pristine: bool,
) -> Option<Vec<u8>> {
    std::fs::create_dir_all(dir).expect("repo dir");
    git(dir, &["init", "--quiet", "-b", "main"]);
    write_all(dir, upstream);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "upstream release"]);
    git(dir, &["tag", &format!("upstream/{version}")]);
    let tarball = pristine.then(|| {
        // Upstream's own tarball: made once, with its own time stamps, so
        // only pristine-tar gives these exact bytes back.
        let staged = dir.parent().expect("parent").join(format!("{name}_{version}.orig.tar.gz"));
        let (code, _, err) = run(Command::new("sh").arg("-c").arg(format!(
            "cd {} && tar --owner=1000 --group=1000 --mtime=@1700000000 --transform=s,^,{name}-{version}/, -cf - $(git ls-files) | gzip -9 > {}",
            dir.display(),
            staged.display()
        )))
        .expect("tar");
        assert_eq!(code, 0, "{err}");
        let (code, _, err) =
            run(Command::new("pristine-tar").arg("commit").arg(&staged).arg(format!("upstream/{version}")).current_dir(dir))
                .expect("pristine-tar");
        assert_eq!(code, 0, "{err}");
        std::fs::read(&staged).expect("tarball")
    });
    let files: Vec<(&str, &str)> = debian.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    write_all(dir, &files);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "packaging"]);
    tarball
}

#[tokio::test(flavor = "multi_thread")]
async fn quilt_trees_from_git_build_a_library_and_its_dependent_lintian_clean() {
    let (mirror, suite) = host_debian_mirror().expect("the host's apt sources name a Debian mirror");
    // The root has the suite's updates and security fixes too, from the
    // mirrors the host takes them from.
    let more: Vec<String> = host_debian_sources()
        .into_iter()
        .filter(|(_, s)| *s == format!("{suite}-updates") || *s == format!("{suite}-security"))
        .map(|(uri, s)| format!("{{ suite = \"{s}\", mirror = \"{uri}\" }}"))
        .collect();
    assert!(!more.is_empty(), "the host's apt sources have {suite}-updates or {suite}-security");
    let repos = tempfile::tempdir().expect("tempdir");
    let lib_repo = repos.path().join("kiln-quiltlib");
    let mut lib_debian = debian_dir("kiln-quiltlib", "1.0-1", "kiln-quiltlib-dev", "all", "", LIB_RULES);
    lib_debian.push(("debian/patches/series".into(), "louder.patch\n".into()));
    lib_debian.push(("debian/patches/louder.patch".into(), LOUDER.into()));
    let released = gbp_repo(
        &lib_repo,
        "kiln-quiltlib",
        "1.0",
        &[("kiln-greeting.h", "#define KILN_GREETING \"hello from upstream\"\n"), ("README", "A greeting.\n")],
        &lib_debian,
        true,
    )
    .expect("the released tarball");
    let app_repo = repos.path().join("kiln-quiltapp");
    let app_debian = debian_dir("kiln-quiltapp", "2.0-1", "kiln-quiltapp", "any", ", kiln-quiltlib-dev", APP_RULES);
    gbp_repo(
        &app_repo,
        "kiln-quiltapp",
        "2.0",
        &[(
            "app.c",
            "#include <stdio.h>\n#include <kiln-greeting.h>\nint main(void) { puts(KILN_GREETING); return 0; }\n",
        )],
        &app_debian,
        false,
    );
    let tree_debian =
        debian_dir("kiln-quilttree", "3.0-1", "kiln-quilttree", "all", "", "#!/usr/bin/make -f\n%:\n\tdh $@\n");
    // This tree's version is still being made: its nightlies lead to it.
    let mut tree_files: Vec<(String, String)> = tree_debian
        .into_iter()
        .map(|(p, t)| (format!("src/kiln-quilttree/{p}"), t.replace(") bookworm;", ") UNRELEASED;")))
        .collect();
    tree_files.push(("src/kiln-quilttree/NOTES".into(), "No upstream history here.\n".into()));
    let config = format!(
        r#"
[master]
changelog_maintainer = "Example Builds <builds@example.org>"

[uploads]
keyring = "keys/uploaders.asc"
require_signature = true

[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "debian-{suite}-amd64"
family = "deb"
suite = "{suite}"
suites = [{more}]
arch = "amd64"
mirror = "{mirror}"

[[component]]
name = "kiln-quiltlib"
source = {{ git = "file://{lib}", branch = "main" }}
takes_uploads = true

[[component]]
name = "kiln-quiltapp"
source = {{ git = "file://{app}", branch = "main" }}
orig = "upstream-tag"
depends_on = ["kiln-quiltlib"]

[[component]]
name = "kiln-quilttree"
source = {{ path = "src/kiln-quilttree" }}
"#,
        lib = lib_repo.display(),
        app = app_repo.display(),
        more = more.join(", "),
    );
    // Ann uploads the library's releases, signed with her key.
    let gnupg = repos.path().join("gnupg");
    std::fs::create_dir_all(&gnupg).expect("dir");
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let gpg = |args: &[&str]| {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &gnupg).args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""]).args(args);
        let (code, out, err) = run(&mut cmd).expect("gpg");
        assert_eq!(code, 0, "gpg {args:?}: {err}");
        out
    };
    gpg(&["--quick-gen-key", "Ann Packager <ann@example.org>", "ed25519", "sign", "never"]);
    let keyring = gpg(&["--armor", "--export", "ann@example.org"]);
    tree_files.push(("keys/uploaders.asc".into(), keyring));
    let sources: Vec<(&str, &str)> = tree_files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let mut farm = Farm::new(KILN.as_ref(), &config, &sources);
    std::fs::set_permissions(
        farm.path("src/kiln-quilttree/debian/rules"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    farm.start_master().await;
    let cache = format!("{}/kiln-root-cache", env!("CARGO_TARGET_TMPDIR"));
    let target = format!("debian-{suite}-amd64");
    farm.start_worker_with("w1", &[&target], 1, &["--root-cache", &cache, "--default-build-user"]);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let log = async |id: i64, step: &str| client.log(id, step, 0).await.map(|c| c.data).unwrap_or_default();

    // The library's release 1.0-1 came in first, as an upload into `dev`.
    let upload_dir = repos.path().join("upload");
    std::fs::create_dir_all(&upload_dir).expect("dir");
    std::fs::write(upload_dir.join("kiln-quiltlib_1.0.orig.tar.gz"), &released).expect("orig");
    let (code, _, err) =
        run(Command::new("tar").args(["-xzf", "kiln-quiltlib_1.0.orig.tar.gz"]).current_dir(&upload_dir)).expect("tar");
    assert_eq!(code, 0, "{err}");
    let files: Vec<(&str, &str)> = lib_debian.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    write_all(&upload_dir.join("kiln-quiltlib-1.0"), &files);
    let (code, _, err) = run(Command::new("dpkg-source").args(["-b", "kiln-quiltlib-1.0"]).current_dir(&upload_dir))
        .expect("dpkg-source");
    assert_eq!(code, 0, "{err}");
    let dsc = upload_dir.join("kiln-quiltlib_1.0-1.dsc");
    let signed = upload_dir.join("signed.dsc");
    gpg(&["--clearsign", "--output", signed.to_str().expect("path"), dsc.to_str().expect("path")]);
    std::fs::rename(&signed, &dsc).expect("signed dsc");
    let (code, out, err) = run(farm.kiln().arg("upload").arg(&dsc).arg("--json")).expect("upload");
    assert_eq!(code, 0, "{err}");
    let accepted: serde_json::Value = serde_json::from_str(&out).expect("json");
    let uploaded = accepted["builds"][0]["id"].as_i64().expect("build id");
    let uploaded = farm.wait_finished(uploaded, Duration::from_secs(900)).await;
    assert_eq!(uploaded.state, BuildState::Succeeded, "{uploaded:?}\n{}", log(uploaded.id, "build").await);
    assert_eq!(uploaded.properties["version"].value, "1.0-1");
    // The first build here meets the root: made (with its progress lines), or cached.
    let root = log(uploaded.id, "root").await;
    let step = uploaded.steps.iter().find(|s| s.name == "root").map(|s| (&s.started_at, &s.finished_at));
    eprintln!(
        "root of the first build {step:?}: {:?}",
        root.lines().filter(|l| l.starts_with("kiln:")).collect::<Vec<_>>()
    );

    let created = client
        .create_builds(&BuildRequestBody {
            components: vec!["kiln-quiltapp".into(), "kiln-quiltlib".into(), "kiln-quilttree".into()],
            ..Default::default()
        })
        .await
        .expect("create");
    let id = |name: &str| created.builds.iter().find(|b| b.component == name).expect("build").id;

    // The library: its upstream tarball comes back from pristine-tar with
    // the released bytes; the patch is applied at build time.
    let lib = farm.wait_finished(id("kiln-quiltlib"), Duration::from_secs(900)).await;
    let lib_source = log(lib.id, "source").await;
    assert_eq!(lib.state, BuildState::Succeeded, "{lib:?}\n{lib_source}\n{}", log(lib.id, "build").await);
    assert!(
        lib_source.contains("upstream tarball kiln-quiltlib_1.0.orig.tar.gz from the pristine-tar branch"),
        "{lib_source}"
    );
    let lib_deps = log(lib.id, "deps").await;
    let suites =
        lib_deps.lines().find(|l| l.starts_with("kiln: the build root's archive suites: ")).unwrap_or_default();
    assert!(suites.contains(&format!("{suite} ({mirror})")), "{lib_deps}");
    for extra in ["-updates", "-security"].iter().filter(|x| config.contains(&format!("\"{suite}{x}\""))) {
        assert!(suites.contains(&format!("{suite}{extra} (")), "{suites}");
    }
    let lib_version = lib.properties["version"].value.clone();
    // Its changelog names a released version: the tree is past the upload
    // of it, so the nightly sorts above it.
    assert!(
        lib_version.starts_with("1.0-1+nightly") && lib_version.ends_with(&format!(".{}", lib.id)),
        "{lib_version}"
    );
    let lib_dir = farm.path("lib");
    let (code, _, err) = run(farm.kiln().args(["fetch", &lib.id.to_string()]).arg(&lib_dir)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let orig = std::fs::read(lib_dir.join("kiln-quiltlib_1.0.orig.tar.gz")).expect("the orig is an artifact");
    assert!(orig == released, "pristine-tar gives back the released tarball byte for byte");

    // The program: its tarball from the upstream tag; its build root gets
    // the library's nightly from kiln's own repository, patch and all.
    let app = farm.wait_finished(id("kiln-quiltapp"), Duration::from_secs(900)).await;
    let app_source = log(app.id, "source").await;
    let deps = log(app.id, "deps").await;
    assert_eq!(app.state, BuildState::Succeeded, "{app:?}\n{app_source}\n{deps}\n{}", log(app.id, "build").await);
    assert!(
        app_source.contains("upstream tarball kiln-quiltapp_2.0.orig.tar.gz from the upstream tag upstream/2.0"),
        "{app_source}"
    );
    // Both versions are in `dev`; the program gets the nightly just built.
    let index = reqwest::get(format!("{}/repos/dev/apt/dists/{suite}/main/binary-amd64/Packages", farm.url()))
        .await
        .expect("Packages")
        .text()
        .await
        .expect("text");
    for version in ["1.0-1", lib_version.as_str()] {
        let listed = index.split("\n\n").any(|stanza| {
            stanza.lines().any(|l| l == "Package: kiln-quiltlib-dev")
                && stanza.lines().any(|l| l == format!("Version: {version}"))
        });
        assert!(listed, "{version} in dev: {index}");
    }
    assert!(deps.contains(&format!("Setting up kiln-quiltlib-dev ({lib_version})")), "{deps}");
    // The archive's package lists came from the worker's cache (the first
    // build read them); kiln's own repository was read afresh.
    assert!(deps.contains("package lists from the cache"), "{deps}");
    for (what, log) in
        [("library (lists read from the archive)", log(lib.id, "deps").await), ("program (lists cached)", deps.clone())]
    {
        let fetched: Vec<&str> =
            log.lines().filter(|l| l.starts_with("Fetched") || l.contains("package lists")).collect();
        eprintln!("deps of the {what}: {fetched:?}");
    }
    let app_dir = farm.path("app");
    let (code, _, err) = run(farm.kiln().args(["fetch", &app.id.to_string()]).arg(&app_dir)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let app_version = app.properties["version"].value.clone();
    // The program's debug symbols are published apart, in main/debug:
    // apt finds them only when that component is on the sources line.
    let key = farm.path("dev.asc");
    let dev_key = reqwest::get(format!("{}/repos/dev/key.asc", farm.url())).await.expect("key").text().await;
    std::fs::write(&key, dev_key.expect("key")).expect("key");
    let dbgsym = format!("kiln-quiltapp-dbgsym={app_version}");
    for (components, found) in [("main", false), ("main main/debug", true)] {
        let line = format!("deb [signed-by={}] {}/repos/dev/apt {suite} {components}", key.display(), farm.url());
        let apt = kiln_testing::AptClient::new(&farm.path(&format!("apt-{}", components.len())), &[line]);
        let (code, out, err) = apt.apt_get(&["update"]);
        assert_eq!(code, 0, "{out}\n{err}");
        let (code, out, err) = apt.apt_get(&["install", "-y", "--download-only", &dbgsym]);
        assert_eq!(code == 0, found, "{components}: {out}\n{err}");
    }
    let packages = std::fs::read_to_string(app_dir.join("buildroot-packages.txt")).expect("root's packages");
    assert!(packages.lines().any(|l| l == format!("kiln-quiltlib-dev={lib_version}")), "{packages}");
    let unpacked = farm.path("app-unpacked");
    let deb = app_dir.join(format!("kiln-quiltapp_{app_version}_amd64.deb"));
    let (code, _, _) = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked)).expect("dpkg-deb -x");
    assert_eq!(code, 0);
    let (code, out, _) = run(&mut Command::new(unpacked.join("usr/bin/kiln-quiltapp"))).expect("run");
    assert_eq!((code, out.as_str()), (0, "HELLO FROM THE PATCHED LIBRARY\n"));

    // A quilt tree with no upstream history: the tarball is the tree
    // without debian/, and the nightly's upstream version is its own.
    let tree = farm.wait_finished(id("kiln-quilttree"), Duration::from_secs(900)).await;
    let tree_source = log(tree.id, "source").await;
    assert_eq!(tree.state, BuildState::Succeeded, "{tree:?}\n{tree_source}");
    let tree_version = tree.properties["version"].value.clone();
    assert!(
        tree_version.starts_with("3.0~nightly") && tree_version.ends_with(&format!(".{}-1", tree.id)),
        "{tree_version}"
    );
    assert!(tree_source.contains("made from the tree without debian/"), "{tree_source}");

    // lintian over every nightly: kiln's changelog entry names a real
    // maintainer and the target's suite, so nothing of kiln's draws a tag.
    for (name, dir, version) in [("kiln-quiltlib", &lib_dir, &lib_version), ("kiln-quiltapp", &app_dir, &app_version)] {
        let changes = dir.join(format!("{name}_{version}_amd64.changes"));
        assert!(changes.is_file(), "{} is among the artifacts", changes.display());
        let (code, out, err) = run(Command::new("lintian").arg("--no-cfg").arg(&changes)).expect("lintian");
        let report = format!("{out}{err}");
        assert!(!report.contains("bogus-mail-host"), "{report}");
        assert!(!report.lines().any(|l| l.starts_with("E: ")), "lintian errors:\n{report}");
        assert_eq!(code, 0, "lintian fails on errors only:\n{report}");
    }
    let (code, out, _) = run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && dpkg-source -x kiln-quiltlib_{lib_version}.dsc x >/dev/null && head -n 6 x/debian/changelog",
        lib_dir.display()
    )))
    .expect("dpkg-source -x");
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("kiln-quiltlib ({lib_version}) {suite}; urgency=medium")), "{out}");
    assert!(out.contains(" -- Example Builds <builds@example.org>  "), "{out}");
}

/// The OpenPanel layout: the spec under `rpm/`, the files it names at the
/// top of the tree (they built with `rpmbuild -bs rpm/libgrace.spec
/// --define "_sourcedir $(pwd)"`).
#[tokio::test(flavor = "multi_thread")]
async fn a_spec_under_rpm_finds_its_sources_at_the_top_of_the_tree() {
    let spec = "Name: libgrace\nVersion: 1.0\nRelease: 1\nSummary: grace\nLicense: MIT\nBuildArch: noarch\n\
                Source0: grace.conf\nPatch0: louder.patch\n\n%description\nOpenPanel's layout.\n\n\
                %prep\n%setup -q -c -T\ncp %{SOURCE0} .\npatch -p1 < %{PATCH0}\n\n\
                %install\ninstall -D -m 0644 grace.conf %{buildroot}/etc/grace.conf\n\n%files\n/etc/grace.conf\n";
    let patch = "--- a/grace.conf\n+++ b/grace.conf\n@@ -1 +1 @@\n-quiet = yes\n+quiet = no\n";
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "el-9"
family = "rpm"

[[component]]
name = "libgrace"
source = { path = "src/grace" }
spec = "rpm/libgrace.spec"
"#;
    let files = [
        ("src/grace/rpm/libgrace.spec", spec),
        ("src/grace/grace.conf", "quiet = yes\n"),
        ("src/grace/louder.patch", patch),
    ];
    let farm = Farm::running(KILN.as_ref(), config, &files, "w1", &["el-9"], 1).await;
    let client = farm.client();
    let request = BuildRequestBody { components: vec!["libgrace".into()], ..Default::default() };
    let id = client.create_builds(&request).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(300)).await;
    let source = client.log(id, "source", 0).await.map(|c| c.data).unwrap_or_default();
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}\n{source}");
    assert!(source.contains("grace.conf from the top of the source tree"), "{source}");
    assert!(source.contains("louder.patch from the top of the source tree"), "{source}");
    let version = b.properties["version"].value.clone();
    let dir = farm.path("fetched");
    let (code, _, err) = run(farm.kiln().args(["fetch", &id.to_string()]).arg(&dir)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    let rpm = dir.join(format!("libgrace-{version}.noarch.rpm"));
    let (code, out, err) = run(Command::new("sh")
        .arg("-c")
        .arg(format!("rpm2cpio {} | cpio -i --to-stdout ./etc/grace.conf 2>/dev/null", rpm.display())))
    .expect("rpm2cpio");
    assert_eq!((code, out.as_str()), (0, "quiet = no\n"), "{err}");
}
