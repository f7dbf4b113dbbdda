//! Signed repositories, end to end with real clients: builds publish their
//! packages into channels served by the master; real `apt-get` and `gpgv`
//! read them; promotion, removal, snapshots, retention, concurrency and a
//! master killed mid-publish.
//!
//! The packages here are made by the build's own steps with `dpkg-deb`
//! (seconds, no build root); `packages.rs` covers the standard pipelines.

use kiln_core::BuildState;
use kiln_proto::api::{BuildRequestBody, PackageInfo};
use kiln_testing::{run, wait_for, AptClient, Farm, MAKE_DEB};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn config(channels: &str, slots_note: &str) -> String {
    format!(
        r#"# {slots_note}
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[worker]]
name = "w2"
token_file = "secrets/w2.token"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"
arch = "amd64"

[[component]]
name = "tool"
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "rlib"
properties = {{ pkg = "kiln-rlib" }}
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "rapp"
depends_on = ["rlib"]
rebuild_after = ["rlib"]
properties = {{ pkg = "kiln-rapp" }}
steps = [
  {{ name = "check", run = 'set -- $KILN_APT_SOURCE; curl -fsS "$1/dists/$2/main/binary-amd64/Packages" | grep "^Package: kiln-rlib" && echo "kiln-rlib was published before this build started"' }},
  {{ name = "package", run = '''{MAKE_DEB}''' }},
]
artifacts = ["*.deb"]

[[component]]
name = "broken"
steps = [ {{ name = "package", run = "echo not a package > broken_1.0_all.deb" }} ]
artifacts = ["*.deb"]
{channels}
"#
    )
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn request(pairs: &[(&str, &str)]) -> BuildRequestBody {
    BuildRequestBody { components: vec!["tool".into()], properties: props(pairs), ..Default::default() }
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn fetch(url: &str) -> Vec<u8> {
    let r = get(url).await;
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().await.expect("body").to_vec()
}

fn sha256(bytes: &[u8]) -> String {
    kiln_repo::hash::sha256(bytes)
}

/// Checks one suite of a served channel the way apt reads it: `InRelease`
/// first, then each `Packages` by its hash (Acquire-By-Hash), then every
/// file the index names. Returns the package names listed for amd64.
async fn check_consistent(base: &str, channel: &str) -> Vec<String> {
    let dists = format!("{base}/repos/{channel}/apt/dists/bookworm");
    let inrelease = String::from_utf8(fetch(&format!("{dists}/InRelease")).await).expect("utf8");
    let listed = kiln_repo::apt::release_sha256(&inrelease);
    let (hash, _) = listed
        .iter()
        .find(|(_, p)| p == "main/binary-amd64/Packages")
        .expect("Release lists main/binary-amd64/Packages");
    let packages = fetch(&format!("{dists}/main/binary-amd64/by-hash/SHA256/{hash}")).await;
    assert_eq!(&sha256(&packages), hash, "by-hash content matches the Release");
    let text = String::from_utf8(packages).expect("utf8");
    let mut names = Vec::new();
    for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let field =
            |f: &str| stanza.lines().find_map(|l| l.strip_prefix(&format!("{f}: "))).map(str::to_string).expect(f);
        let deb = fetch(&format!("{base}/repos/{channel}/apt/{}", field("Filename"))).await;
        assert_eq!(sha256(&deb), field("SHA256"), "{} matches its index entry", field("Filename"));
        names.push(field("Package"));
    }
    names
}

fn all_modes_ok(dir: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let meta = std::fs::symlink_metadata(e.path()).map_err(|e| e.to_string())?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode != 0o755 {
                return Err(format!("{}: mode {mode:o}", e.path().display()));
            }
            all_modes_ok(&e.path())?;
        } else if meta.is_file() && mode != 0o644 {
            return Err(format!("{}: mode {mode:o}", e.path().display()));
        }
    }
    Ok(())
}

async fn list(farm: &Farm, channel: &str) -> Vec<PackageInfo> {
    farm.client().packages(channel, None, None).await.expect("list packages")
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_publish_into_signed_channels_that_apt_installs_from() {
    let channels = r#"
[[channel]]
name = "dev"
accepts = "nightly"
keep = 2
promote_to = ["stable"]
sign_debs = true
valid_until = "7d"

[[channel]]
name = "stable"
accepts = "release"
key = "keys/stable.asc"
passphrase = { file = "secrets/stable.pass" }
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config(channels, "repos"), &[("secrets/stable.pass", "correct horse\n")]);
    // A release key made with the CLI, protected by a passphrase from a secret file.
    let (code, out, err) = run(farm
        .kiln()
        .args(["key", "generate", "--type", "ed25519", "--name", "Test Releases <rel@localhost>"])
        .arg("--out")
        .arg(farm.path("keys/stable.asc"))
        .arg("--passphrase-file")
        .arg(farm.path("secrets/stable.pass")))
    .expect("kiln key generate");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fingerprint: ") && out.contains("(ed25519)"), "{out}");
    let key_mode = std::fs::metadata(farm.path("keys/stable.asc")).expect("key").permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);

    // The master runs under umask 077, as a careless daemon setup would.
    farm.start_master_with(Some(0o077), &[]).await;
    let base = farm.url();
    let client = farm.client();
    let log = farm.master_log();
    assert!(!log.contains("correct horse"), "the passphrase never reaches a log");

    // Both channels are valid, empty, signed repositories from the start.
    let apt_dir = farm.path("apt");
    let dev_key = farm.path("dev.asc");
    let stable_key = farm.path("stable-key.asc");
    std::fs::write(&dev_key, fetch(&format!("{base}/repos/dev/key.asc")).await).expect("key");
    std::fs::write(&stable_key, fetch(&format!("{base}/repos/stable/key.asc")).await).expect("key");
    let apt = AptClient::new(
        &apt_dir,
        &[
            format!("deb [signed-by={}] {base}/repos/dev/apt bookworm main", dev_key.display()),
            format!("deb [signed-by={}] {base}/repos/stable/apt bookworm main", stable_key.display()),
        ],
    );
    let (code, out, err) = apt.apt_get(&["update"]);
    assert_eq!(code, 0, "apt-get update on empty channels:\n{out}\n{err}");
    assert!(!err.contains("W:") && !err.contains("E:"), "{err}");
    // dev's generated key is RSA 4096 (every client verifies it), stable's
    // was made Ed25519 on request: gpg says which (algorithm 1 is RSA, 22 EdDSA).
    for (key, want) in [(&dev_key, "4096:1:"), (&stable_key, ":22:")] {
        let (code, out, err) =
            run(Command::new("gpg").args(["--show-keys", "--with-colons"]).arg(key)).expect("gpg --show-keys");
        assert_eq!(code, 0, "{err}");
        let public = out.lines().find(|l| l.starts_with("pub:")).expect("a public key");
        assert!(public.contains(want), "{public}");
    }

    farm.start_worker("w1", &["debian-12-amd64"], 2);
    farm.wait_for_workers(&["w1"]).await;

    // Three nightlies: each lands in dev; dev keeps the newest two.
    let mut nightly = Vec::new();
    for _ in 0..3 {
        let id = client.create_builds(&request(&[])).await.expect("create").builds[0].id;
        let b = farm.wait_finished(id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{b:?}\n{}", farm.master_log());
        assert_eq!(b.properties["published"].value, "1 to dev");
        nightly.push(id);
    }
    let dev: Vec<String> = list(&farm, "dev").await.into_iter().map(|p| p.version).collect();
    assert_eq!(dev, [format!("1.0~b{}", nightly[1]), format!("1.0~b{}", nightly[2])], "retention keeps 2");
    assert!(list(&farm, "stable").await.is_empty(), "nightlies stay out of stable");

    // apt installs the newest nightly from the master, verified by its key.
    let (code, out, err) = apt.apt_get(&["update"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = apt.apt_get(&["install", "-y", "--download-only", "kiln-tool"]);
    if code != 0 {
        // Once an index answered If-Modified-Since with 304 and apt kept
        // the old one. Should this fail again, show which side is stale:
        // what is served now, what apt kept.
        let dists = format!("{base}/repos/dev/apt/dists/bookworm");
        let served = String::from_utf8_lossy(&fetch(&format!("{dists}/InRelease")).await).into_owned();
        let packages =
            String::from_utf8_lossy(&fetch(&format!("{dists}/main/binary-amd64/Packages")).await).into_owned();
        let kept: Vec<String> = std::fs::read_dir(apt_dir.join("lists"))
            .map(|d| d.flatten().map(|e| format!("{:?} {:?}", e.file_name(), e.metadata().map(|m| m.len()))).collect())
            .unwrap_or_default();
        panic!(
            "apt-get install failed ({code}):\n{out}\n{err}\nserved InRelease:\n{served}\nserved Packages:\n{packages}\n\
             apt's lists: {kept:?}\nmaster log:\n{}",
            farm.master_log()
        );
    }
    let debs = apt.downloaded();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let name = debs[0].file_name().expect("name").to_string_lossy().into_owned();
    assert_eq!(name, format!("kiln-tool_1.0~b{}_all.deb", nightly[2]));
    let (code, body, _) = run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&debs[0])).expect("dpkg-deb");
    assert_eq!(code, 0);
    assert!(body.contains(&format!("built by {}", nightly[2])));

    // dev signs each .deb too: debsig-verify accepts it under a policy for dev's key.
    let fingerprint =
        client.channels().await.expect("channels").into_iter().find(|c| c.name == "dev").expect("dev").fingerprint;
    let keyid = &fingerprint[fingerprint.len() - 16..];
    let (policies, keyrings) =
        (farm.path(&format!("debsig/policies/{keyid}")), farm.path(&format!("debsig/keyrings/{keyid}")));
    std::fs::create_dir_all(&policies).expect("dir");
    std::fs::create_dir_all(&keyrings).expect("dir");
    std::fs::write(keyrings.join("kiln.gpg"), fetch(&format!("{base}/repos/dev/key.gpg")).await).expect("keyring");
    std::fs::write(
        policies.join("kiln.pol"),
        format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE Policy SYSTEM \"https://www.debian.org/debsig/1.0/policy.dtd\">\n\
             <Policy xmlns=\"https://www.debian.org/debsig/1.0/\">\n\
             <Origin Name=\"kiln\" id=\"{keyid}\" Description=\"kiln dev\"/>\n\
             <Selection><Required Type=\"origin\" File=\"kiln.gpg\" id=\"{keyid}\"/></Selection>\n\
             <Verification MinOptional=\"0\"><Required Type=\"origin\" File=\"kiln.gpg\" id=\"{keyid}\"/></Verification>\n\
             </Policy>\n"
        ),
    )
    .expect("policy");
    let debsig = |deb: &Path| {
        run(Command::new("debsig-verify")
            .arg("--policies-dir")
            .arg(farm.path("debsig/policies"))
            .arg("--keyrings-dir")
            .arg(farm.path("debsig/keyrings"))
            .arg(deb))
        .expect("debsig-verify")
    };
    let (code, out, err) = debsig(&debs[0]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Verified package from 'kiln dev'"), "{out}");

    // gpgv checks InRelease and Release.gpg against the served key.
    let dists = format!("{base}/repos/dev/apt/dists/bookworm");
    let keyring = farm.path("dev.gpg");
    std::fs::write(&keyring, fetch(&format!("{base}/repos/dev/key.gpg")).await).expect("keyring");
    let inrelease = farm.path("InRelease");
    std::fs::write(&inrelease, fetch(&format!("{dists}/InRelease")).await).expect("InRelease");
    let (code, _, err) = run(Command::new("gpgv").arg("--keyring").arg(&keyring).arg(&inrelease)).expect("gpgv");
    assert_eq!(code, 0, "gpgv InRelease: {err}");
    let (release, sig) = (farm.path("Release"), farm.path("Release.gpg"));
    std::fs::write(&release, fetch(&format!("{dists}/Release")).await).expect("Release");
    std::fs::write(&sig, fetch(&format!("{dists}/Release.gpg")).await).expect("Release.gpg");
    let (code, _, err) =
        run(Command::new("gpgv").arg("--keyring").arg(&keyring).arg(&sig).arg(&release)).expect("gpgv");
    assert_eq!(code, 0, "gpgv Release.gpg: {err}");
    std::fs::write(&release, b"Origin: someone else\n").expect("tamper");
    let (code, _, _) = run(Command::new("gpgv").arg("--keyring").arg(&keyring).arg(&sig).arg(&release)).expect("gpgv");
    assert_ne!(code, 0, "a changed Release fails verification");
    check_consistent(&base, "dev").await;
    // dev's Release lists SHA-512 sums and says how long it is valid.
    let text = String::from_utf8(fetch(&format!("{dists}/Release")).await).expect("utf8");
    assert!(text.contains("\nValid-Until: ") && text.contains("\nSHA512:\n"), "{text}");
    // Every compressed index is one gzip member: Python's zlib, which reads
    // only the first, sees the whole index.
    let packages = fetch(&format!("{dists}/main/binary-amd64/Packages")).await;
    let gz = farm.path("Packages.gz");
    std::fs::write(&gz, fetch(&format!("{dists}/main/binary-amd64/Packages.gz")).await).expect("gz");
    assert_eq!(kiln_testing::python_gunzip(&gz), packages);

    // Modes are 0644/0755 despite umask 077.
    all_modes_ok(&farm.path("data/repos")).expect("repository modes");

    // HTTP: ETag/If-None-Match, Range, content types.
    let pool_url = format!("{base}/repos/dev/apt/{}", list(&farm, "dev").await[0].path.trim_start_matches("apt/"));
    let r = get(&pool_url).await;
    assert_eq!(r.headers()["content-type"], "application/vnd.debian.binary-package");
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let http = reqwest::Client::new();
    let r = http.get(&pool_url).header("if-none-match", &etag).send().await.expect("get");
    assert_eq!(r.status(), 304);
    // A package never changes under its name: If-Modified-Since answers
    // 304. An index may change twice within the second that header names,
    // so it is sent whole whatever the header says.
    let far = "Fri, 01 Jan 2100 00:00:00 GMT";
    let r = http.get(&pool_url).header("if-modified-since", far).send().await.expect("get");
    assert_eq!(r.status(), 304);
    let in_release = format!("{base}/repos/dev/apt/dists/bookworm/InRelease");
    let r = http.get(&in_release).header("if-modified-since", far).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let r = http.get(&in_release).header("if-none-match", &etag).send().await.expect("get");
    assert_eq!(r.status(), 304, "an unchanged index still answers 304 to its ETag");
    let r = http.get(&pool_url).header("range", "bytes=0-7").send().await.expect("get");
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.expect("body")[..], b"!<arch>\n");
    assert_eq!(get(&format!("{base}/repos/dev/apt/../../admin.token")).await.status(), 404);
    assert_eq!(get(&format!("{base}/repos/nope/key.asc")).await.status(), 404);

    // A build whose .deb is not a package fails, naming the file; nothing is published.
    let bad = BuildRequestBody { components: vec!["broken".into()], ..Default::default() };
    let id = client.create_builds(&bad).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Failed);
    let reason = b.reason.unwrap_or_default();
    assert!(
        reason.starts_with("publish failed: broken_1.0_all.deb: not a valid package: not an ar archive"),
        "{reason}"
    );
    assert_eq!(list(&farm, "dev").await.len(), 2);

    // Releases: the changelog's version, once; again only with --replace.
    let rel = |extra: &[(&str, &str)]| {
        let mut p = vec![("release", "true"), ("version", "2.0-1")];
        p.extend_from_slice(extra);
        request(&p)
    };
    let r1 = client.create_builds(&rel(&[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(r1, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.properties["published"].value, "1 to stable");
    let r2 = client.create_builds(&rel(&[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(r2, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Failed);
    let reason = b.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("kiln-tool 2.0-1 (all) is already published in stable") && reason.contains("--replace"),
        "{reason}"
    );
    let r3 = client.create_builds(&rel(&[("replace", "true")])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(r3, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let stable = list(&farm, "stable").await;
    assert_eq!(stable.len(), 1);
    assert_eq!((stable[0].version.as_str(), stable[0].build_id), ("2.0-1", Some(r3)));
    // stable does not sign .debs themselves: debsig-verify finds no origin signature.
    let unsigned = farm.path("unsigned.deb");
    std::fs::write(&unsigned, fetch(&format!("{base}/repos/stable/{}", stable[0].path)).await).expect("deb");
    let (code, _, _) = debsig(&unsigned);
    assert_ne!(code, 0, "an unsigned .deb does not verify");
    check_consistent(&base, "stable").await;

    // Promotion: dev -> stable only (stable promotes nowhere), re-signed by stable's key.
    let newest = format!("1.0~b{}", nightly[2]);
    let (code, out, err) =
        run(farm.kiln().args(["repo", "promote", "kiln-tool", &newest, "--from", "dev", "--to", "stable"]))
            .expect("promote");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("promoted 1 file(s)"), "{out}");
    let (code, _, err) =
        run(farm.kiln().args(["repo", "promote", "kiln-tool", "2.0-1", "--from", "stable", "--to", "dev"]))
            .expect("promote");
    assert_ne!(code, 0);
    assert!(err.contains("does not promote to dev"), "{err}");
    let versions: Vec<String> = list(&farm, "stable").await.into_iter().map(|p| p.version).collect();
    assert_eq!(versions, ["2.0-1".to_string(), newest.clone()]);
    // The packages page: tool on its target, what dev and stable hold and
    // the builds that made it.
    let page = String::from_utf8(fetch(&format!("{base}/packages")).await).expect("utf-8");
    let row = page.split("<tr>").find(|r| r.contains("<th scope=\"row\">tool</th>")).expect("a row for tool");
    for (channel, id, version) in [("dev", nightly[2], newest.as_str()), ("stable", r3, "2.0-1")] {
        let held = format!(
            "<span class=\"channel\">{channel}</span> <a href=\"/builds/{id}\" title=\"build #{id}\">{version}</a>"
        );
        assert!(row.contains(&held), "{held} in {row}");
    }
    let skeyring = farm.path("stable.gpg");
    std::fs::write(&skeyring, fetch(&format!("{base}/repos/stable/key.gpg")).await).expect("keyring");
    std::fs::write(&inrelease, fetch(&format!("{base}/repos/stable/apt/dists/bookworm/InRelease")).await).expect("ir");
    let (code, _, err) = run(Command::new("gpgv").arg("--keyring").arg(&skeyring).arg(&inrelease)).expect("gpgv");
    assert_eq!(code, 0, "stable is signed by the stable key: {err}");
    let (code, _, _) = run(Command::new("gpgv").arg("--keyring").arg(&keyring).arg(&inrelease)).expect("gpgv");
    assert_ne!(code, 0, "and not by the dev key");
    assert_eq!(check_consistent(&base, "stable").await, ["kiln-tool", "kiln-tool"]);

    // Snapshot, remove, roll back.
    let (code, out, err) = run(farm.kiln().args(["repo", "snapshot", "stable", "before-cleanup"])).expect("snapshot");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 file(s)"), "{out}");
    let (code, _, err) = run(farm.kiln().args(["repo", "remove", "stable", "kiln-tool", "2.0-1"])).expect("remove");
    assert_eq!(code, 0, "{err}");
    assert_eq!(list(&farm, "stable").await.len(), 1);
    assert_eq!(check_consistent(&base, "stable").await, ["kiln-tool"]);
    let (code, _, err) = run(farm.kiln().args(["repo", "remove", "stable", "no-such-package"])).expect("remove");
    assert_ne!(code, 0);
    assert!(err.contains("not in channel stable"), "{err}");
    let (code, _, err) = run(farm.kiln().args(["repo", "rollback", "stable", "before-cleanup"])).expect("rollback");
    assert_eq!(code, 0, "{err}");
    let versions: Vec<String> = list(&farm, "stable").await.into_iter().map(|p| p.version).collect();
    assert_eq!(versions, ["2.0-1".to_string(), newest.clone()]);
    assert_eq!(check_consistent(&base, "stable").await.len(), 2);
    let (code, out, err) = apt.apt_get(&["update"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // The previous generation's index stays reachable by hash.
    let old_inrelease =
        String::from_utf8(fetch(&format!("{base}/repos/dev/apt/dists/bookworm/InRelease")).await).expect("utf8");
    let id = client.create_builds(&request(&[])).await.expect("create").builds[0].id;
    assert_eq!(farm.wait_finished(id, Duration::from_secs(60)).await.state, BuildState::Succeeded);
    for (hash, path) in kiln_repo::apt::release_sha256(&old_inrelease).iter().filter(|(_, p)| p.ends_with("Packages")) {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
        let old = fetch(&format!("{base}/repos/dev/apt/dists/bookworm/{dir}/by-hash/SHA256/{hash}")).await;
        assert_eq!(&sha256(&old), hash);
    }

    // A reload that changes nothing writes nothing; one that changes a
    // channel writes it a new generation, and what clients of the one
    // before fetched stays reachable.
    let served =
        |channel: &str| std::fs::read_link(farm.path(&format!("data/repos/{channel}/current"))).expect("current");
    let (dev_gen, stable_gen) = (served("dev"), served("stable"));
    let before = String::from_utf8(fetch(&format!("{dists}/InRelease")).await).expect("utf8");
    let stable_dists = format!("{base}/repos/stable/apt/dists/bookworm");
    let stable_before = String::from_utf8(fetch(&format!("{stable_dists}/InRelease")).await).expect("utf8");
    let generation = client.status().await.expect("status").config_generation;
    farm.hup_master();
    let reloaded = |after: u64| {
        let client = farm.client();
        async move { client.status().await.is_ok_and(|s| s.config_generation > after) }
    };
    assert!(wait_for(Duration::from_secs(20), || reloaded(generation)).await, "the reload");
    // Then stable's description changes: once stable has its new generation,
    // the publisher has looked at dev too, after both reloads.
    let config_path = farm.path("farm.toml");
    let text = std::fs::read_to_string(&config_path).expect("config");
    let changed = text.replace("name = \"stable\"\n", "name = \"stable\"\ndescription = \"releases, reviewed\"\n");
    std::fs::write(&config_path, &changed).expect("config");
    let generation = client.status().await.expect("status").config_generation;
    farm.hup_master();
    assert!(wait_for(Duration::from_secs(20), || reloaded(generation)).await, "the second reload");
    assert!(wait_for(Duration::from_secs(30), || async { served("stable") != stable_gen }).await, "stable rewritten");
    assert_eq!(served("dev"), dev_gen, "a reload that changed nothing of dev rewrote it");
    assert_eq!(String::from_utf8(fetch(&format!("{dists}/InRelease")).await).expect("utf8"), before);
    let stable_release =
        String::from_utf8(fetch(&format!("{base}/repos/stable/apt/dists/bookworm/Release")).await).expect("utf8");
    assert!(stable_release.contains("Description: releases, reviewed\n"), "{stable_release}");
    // The old stable generation is still there beside the new one, and
    // its indexes are reachable by hash from the new.
    assert!(farm.path("data/repos/stable").join(&stable_gen).is_dir(), "the previous generation was removed");
    let old_indexes = kiln_repo::apt::release_sha256(&stable_before);
    assert!(!old_indexes.is_empty());
    for (hash, path) in &old_indexes {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
        let old = fetch(&format!("{stable_dists}/{dir}/by-hash/SHA256/{hash}")).await;
        assert_eq!(&sha256(&old), hash, "{path}");
    }

    // Export for mirrors: a plain tree (no links) that holds the pool too.
    let export = farm.path("export");
    let (code, out, err) =
        run(farm.kiln().args(["repo", "export", "dev"]).arg(&export).arg("--config").arg(farm.path("farm.toml")))
            .expect("export");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exported"), "{out}");
    assert!(export.join("apt/dists/bookworm/InRelease").is_file());
    let pool_file = export.join(list(&farm, "dev").await[0].path.as_str());
    assert!(std::fs::symlink_metadata(&pool_file).expect("pool file exported").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_builds_finishing_together_each_land_once_and_a_publish_cut_by_kill_is_redone() {
    let mut farm = Farm::new(KILN.as_ref(), &config("", "concurrency"), &[]);
    farm.start_master().await;
    farm.start_worker("w1", &["debian-12-amd64"], 25);
    farm.start_worker("w2", &["debian-12-amd64"], 25);
    farm.wait_for_workers(&["w1", "w2"]).await;
    let client = farm.client();
    let base = farm.url();
    let mut ids = Vec::new();
    for i in 0..50 {
        let pkg = format!("kiln-pkg{i:02}");
        ids.push(client.create_builds(&request(&[("pkg", &pkg)])).await.expect("create").builds[0].id);
    }
    // While they land, every look at the repository is consistent.
    let looks = std::sync::atomic::AtomicUsize::new(0);
    let done = kiln_testing::wait_for(Duration::from_secs(180), || async {
        check_consistent(&base, "dev").await;
        looks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let page = client
            .builds(&kiln_client::BuildQuery {
                state: Some("succeeded".into()),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .expect("builds");
        page.builds.len() == 50
    })
    .await;
    assert!(done, "all 50 builds succeed\n{}", farm.master_log());
    assert!(looks.into_inner() > 1);
    let mut names = check_consistent(&base, "dev").await;
    names.sort();
    let want: Vec<String> = (0..50).map(|i| format!("kiln-pkg{i:02}")).collect();
    assert_eq!(names, want, "each package listed exactly once");
    assert_eq!(list(&farm, "dev").await.len(), 50);
    // apt reads the whole index (pieces of it are separate gzip members and
    // xz blocks): the first and the last package both install.
    let key = farm.path("dev.asc");
    std::fs::write(&key, fetch(&format!("{base}/repos/dev/key.asc")).await).expect("key");
    let apt = AptClient::new(
        &farm.path("apt"),
        &[format!("deb [signed-by={}] {base}/repos/dev/apt bookworm main", key.display())],
    );
    let (code, out, err) = apt.apt_get(&["update"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = apt.apt_get(&["install", "-y", "--download-only", "kiln-pkg00", "kiln-pkg49", "kiln-pkg25"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(apt.downloaded().len(), 3);

    // kill -9 of the master in the middle of a publish.
    farm.kill_master();
    let marker = farm.path("paused-mid-publish");
    let marker_s = marker.display().to_string();
    farm.start_master_with(None, &[("KILN_TEST_PUBLISH_PAUSE", &marker_s)]).await;
    let id = client.create_builds(&request(&[("pkg", "kiln-late")])).await.expect("create").builds[0].id;
    assert!(
        kiln_testing::wait_for(Duration::from_secs(60), || async { marker.exists() }).await,
        "the publish reaches the pause\n{}",
        farm.master_log()
    );
    // Recorded in the database, not yet on disk: clients still see the old, valid state.
    assert_eq!(check_consistent(&base, "dev").await.len(), 50);
    farm.kill_master();
    farm.start_master().await;
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}\n{}", farm.master_log());
    let names = check_consistent(&base, "dev").await;
    assert_eq!(names.len(), 51);
    assert_eq!(names.iter().filter(|n| *n == "kiln-late").count(), 1);
    assert_eq!(list(&farm, "dev").await.iter().filter(|p| p.name == "kiln-late").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kiln_release_builds_in_dependency_order_each_published_before_its_dependents() {
    let farm = Farm::running(KILN.as_ref(), &config("", "release"), &[], "w1", &["debian-12-amd64"], 2).await;
    let (code, out, err) =
        run(farm.kiln().args(["release", "rlib", "rapp", "-p", "version=3.1-1"])).expect("kiln release");
    let check_log = async |component: &str| {
        let b = farm
            .client()
            .builds(&kiln_client::BuildQuery { component: Some(component.into()), ..Default::default() })
            .await
            .expect("builds");
        farm.client().log(b.builds[0].id, "check", 0).await.map(|c| c.data).unwrap_or_else(|e| e.to_string())
    };
    assert_eq!(code, 0, "{out}\n{err}\n{}", check_log("rapp").await);
    // The summary table follows its header line (progress lines come before it).
    let rows: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("BUILD")).filter(|l| l.starts_with('#')).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, component) in rows.iter().zip(["rlib", "rapp"]) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..7], [component, "debian-12-amd64", "succeeded", "3.1-1", "1", "to"], "{row}");
    }
    let app = farm
        .client()
        .builds(&kiln_client::BuildQuery { component: Some("rapp".into()), ..Default::default() })
        .await
        .expect("builds");
    let log = farm.client().log(app.builds[0].id, "check", 0).await.expect("log").data;
    assert!(log.contains("kiln-rlib was published before this build started"), "{log}");
    let stable: Vec<String> =
        list(&farm, "stable").await.into_iter().map(|p| format!("{} {}", p.name, p.version)).collect();
    assert_eq!(stable, ["kiln-rlib 3.1-1", "kiln-rapp 3.1-1"]);

    // The same release again: refused (a version is published once), and the summary says why.
    let (code, out, _) = run(farm.kiln().args(["release", "rlib", "-p", "version=3.1-1"])).expect("kiln release");
    assert_ne!(code, 0);
    assert!(out.contains("already published in stable"), "{out}");
    let (code, out, err) =
        run(farm.kiln().args(["release", "rlib", "-p", "version=3.1-1", "--replace"])).expect("kiln release");
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_a_library_rebuilds_what_asked_to_be_rebuilt_after_it() {
    let farm = Farm::running(KILN.as_ref(), &config("", "rebuild"), &[], "w1", &["debian-12-amd64"], 2).await;
    let client = farm.client();
    let lib = client
        .create_builds(&BuildRequestBody { components: vec!["rlib".into()], ..Default::default() })
        .await
        .expect("create")
        .builds[0]
        .id;
    assert_eq!(farm.wait_finished(lib, Duration::from_secs(60)).await.state, BuildState::Succeeded);
    let query = kiln_client::BuildQuery { component: Some("rapp".into()), ..Default::default() };
    assert!(
        kiln_testing::wait_for(Duration::from_secs(30), || async {
            client.builds(&query).await.is_ok_and(|p| !p.builds.is_empty())
        })
        .await,
        "a rebuild of rapp is requested\n{}",
        farm.master_log()
    );
    let app = client.builds(&query).await.expect("builds").builds.remove(0);
    assert_eq!(app.requested_by.as_deref(), Some("rebuild"));
    let done = farm.wait_finished(app.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{done:?}");
    let log = client.log(app.id, "check", 0).await.expect("log").data;
    assert!(log.contains("kiln-rlib was published before this build started"), "{log}");
    // Built together, nothing extra: the request already builds rapp after rlib.
    let both = client
        .create_builds(&BuildRequestBody { components: vec!["rlib".into(), "rapp".into()], ..Default::default() })
        .await
        .expect("create");
    for b in &both.builds {
        assert_eq!(farm.wait_finished(b.id, Duration::from_secs(60)).await.state, BuildState::Succeeded);
    }
    // Settle: the master has handled both publishes; still two rapp builds in all.
    let n = client.builds(&query).await.expect("builds").builds.len();
    assert_eq!(n, 2);
}

/// A channel key brought from gpg with a lifetime: the repositories page
/// and `/metrics` say when it expires, and the log warns 30 days ahead.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_key_that_expires_soon_is_shown_measured_and_warned_about() {
    let channels = r#"
[[channel]]
name = "dev"
accepts = "nightly"
key = "keys/expiring.asc"

[[channel]]
name = "stable"
accepts = "release"
key_type = "ed25519"
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config(channels, "expiry"), &[]);
    let home = farm.path("gnupg");
    std::fs::create_dir_all(&home).expect("gnupg home");
    let gpg = |args: &[&str]| {
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args))
        .expect("gpg")
    };
    let (code, _, err) = gpg(&["--quick-gen-key", "Expiring <e@example.org>", "rsa3072", "sign", "10d"]);
    assert_eq!(code, 0, "{err}");
    let (code, armored, err) = gpg(&["--armor", "--export-secret-keys", "e@example.org"]);
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir_all(farm.path("keys")).expect("keys dir");
    std::fs::write(farm.path("keys/expiring.asc"), armored).expect("key file");
    farm.start_master().await;
    let base = farm.url();

    let metrics = String::from_utf8(fetch(&format!("{base}/metrics")).await).expect("utf8");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("kiln_channel_key_expiry_timestamp_seconds{channel=\"dev\"}"))
        .unwrap_or_else(|| panic!("no expiry gauge for dev:\n{metrics}"));
    let at: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs_f64();
    assert!((now + 9.0 * 86400.0..now + 11.0 * 86400.0).contains(&at), "{line}");
    assert!(
        !metrics.contains("kiln_channel_key_expiry_timestamp_seconds{channel=\"stable\"}"),
        "stable's key never expires"
    );

    let page = String::from_utf8(fetch(&format!("{base}/repos")).await).expect("utf8");
    assert!(page.contains(" days)</td>") && page.contains("never"), "{page}");
    let warned =
        wait_for(Duration::from_secs(30), || async { farm.master_log().contains("signing key expires soon") }).await;
    assert!(warned, "{}", farm.master_log());

    // Extended in place: a new self-signature, the same key. The master
    // reads the file again by itself, publishes the key and signs the
    // indexes again; apt, given the refreshed key, updates.
    let served = farm.path("dev-key.asc");
    std::fs::write(&served, fetch(&format!("{base}/repos/dev/key.asc")).await).expect("key");
    let shown = |file: &Path| {
        let (code, out, err) =
            run(Command::new("gpg").args(["--show-keys", "--with-colons"]).arg(file)).expect("gpg --show-keys");
        assert_eq!(code, 0, "{err}");
        let public = out.lines().find(|l| l.starts_with("pub:")).expect("pub").to_string();
        let fpr = out.lines().find(|l| l.starts_with("fpr:")).expect("fpr").split(':').nth(9).map(str::to_string);
        (public.split(':').nth(6).and_then(|e| e.parse::<u64>().ok()), fpr)
    };
    let (old_expiry, fpr) = shown(&served);
    let (code, out, err) =
        run(farm.kiln().args(["key", "extend", "dev", "--until", "400d", "--config"]).arg(farm.path("farm.toml")))
            .expect("kiln key extend");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("now expires") && out.contains("(was: 20"), "{out}");
    let moved = wait_for(Duration::from_secs(60), || async {
        std::fs::write(&served, fetch(&format!("{base}/repos/dev/key.asc")).await).is_ok()
            && shown(&served).0 != old_expiry
    })
    .await;
    assert!(moved, "the extended key is not published:\n{}", farm.master_log());
    let (new_expiry, new_fpr) = shown(&served);
    assert_eq!(new_fpr, fpr, "the same key");
    let new_expiry = new_expiry.expect("still expires") as f64;
    assert!((now + 399.0 * 86400.0..now + 401.0 * 86400.0).contains(&new_expiry), "{new_expiry}");
    let metrics = String::from_utf8(fetch(&format!("{base}/metrics")).await).expect("utf8");
    assert!(
        metrics.contains(&format!("kiln_channel_key_expiry_timestamp_seconds{{channel=\"dev\"}} {new_expiry}")),
        "{metrics}"
    );
    let apt = AptClient::new(
        &farm.path("apt"),
        &[format!("deb [signed-by={}] {base}/repos/dev/apt bookworm main", served.display())],
    );
    let (code, out, err) = apt.apt_get(&["update"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("W:") && !err.contains("E:"), "{err}");
}
