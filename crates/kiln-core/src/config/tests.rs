use super::*;
use std::collections::BTreeMap;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../../../examples/farm.toml");

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.render("farm.toml").lines().map(str::to_string).collect(),
    }
}

#[test]
fn the_example_farm_is_accepted_as_written() {
    let cfg = parse(EXAMPLE).expect("example config parses");
    assert_eq!(cfg.master.listen.to_string(), "127.0.0.1:8010");
    assert_eq!(cfg.master.worker_listen.to_string(), "127.0.0.1:9989");
    assert_eq!(cfg.workers.len(), 2);
    assert_eq!(cfg.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["debian-12-amd64", "el-9-x86_64"]);
    let lib = cfg.component("libgrace").expect("libgrace");
    assert_eq!(lib.steps.len(), 3);
    assert_eq!(lib.steps[1].set_property.as_deref(), Some("version"));
    assert!(lib.steps[0].halt_on_failure && !lib.steps[0].always_run);
    let slow = cfg.component("slow").expect("slow");
    assert_eq!(slow.steps[0].timeout, Some(Duration::from_secs(900)));
    let oc = cfg.component("opencore").expect("opencore");
    assert_eq!(oc.depends_on, ["libgrace"]);
    assert_eq!(cfg.targets_of(oc).count(), 1);
    assert_eq!(cfg.targets_of(lib).count(), 2);
}

#[test]
fn every_error_is_reported_with_its_position() {
    let text = r#"
[master]
listn = "127.0.0.1:1"

[[target]]
name = "t1"
family = "deb"

[[target]]
name = "t1"
family = "msi"

[[component]]
name = "a"
steps = [ { name = "s", run = "true", colour = "red" } ]
targets = ["t9"]
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "farm.toml:3:1: unknown key `listn` in [master]; known keys: listen, worker_listen, data_dir, database, worker_timeout, heartbeat, lease, kill_grace, worker_tls, tls, header_timeout, max_artifact_size, url, anonymous_read, changelog_maintainer",
            "farm.toml:10:8: duplicate target name \"t1\" (first defined at line 6, column 8)",
            "farm.toml:11:10: unknown family \"msi\"; known families: deb, rpm",
            "farm.toml:15:39: unknown key `colour` in a step of component \"a\"; known keys: name, run, set_property, timeout, no_output_timeout, env, halt_on_failure, always_run",
            "farm.toml:16:12: component \"a\": unknown target \"t9\"; known targets: t1",
        ]
    );
}

#[test]
fn dependency_cycles_are_named_by_their_members() {
    let text = r#"
[[target]]
name = "t"
family = "rpm"

[[component]]
name = "a"
depends_on = ["b"]
steps = [ { name = "s", run = "true" } ]

[[component]]
name = "b"
depends_on = ["c"]
steps = [ { name = "s", run = "true" } ]

[[component]]
name = "c"
depends_on = ["a", "zzz"]
steps = [ { name = "s", run = "true" } ]
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "farm.toml:8:15: dependency cycle: a -> b -> c -> a",
            "farm.toml:18:20: component \"c\" depends on unknown component \"zzz\"; known components: a, b, c",
        ]
    );
}

#[test]
fn invalid_toml_and_bad_values() {
    let errs = errors("[master\nlisten = 1");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("farm.toml:1:"), "{errs:?}");
    assert!(errs[0].contains("invalid TOML"), "{errs:?}");

    let errs = errors("[master]\nlisten = \"nowhere\"\nworker_timeout = \"5x\"\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("farm.toml:2:10: `listen` must be an address"), "{errs:?}");
    assert!(errs[1].contains("unknown unit"), "{errs:?}");

    let errs = errors("[[component]]\nname = \"../x\"\nsteps = []\n");
    assert!(errs[0].contains("invalid name"), "{errs:?}");

    // A worker without a token file logs in by certificate only.
    let cfg = parse("[[worker]]\nname = \"w\"\n").expect("parses");
    assert_eq!(cfg.workers[0].token_file, None);
}

#[test]
fn step_names_are_unique_per_component() {
    let errs = errors("[[component]]\nname = \"a\"\nsteps = [ { name = \"s\", run = \"true\" }, { name = \"s\", run = \"false\" } ]\n");
    assert_eq!(errs, ["farm.toml:3:50: duplicate step name \"s\" in component \"a\""]);
}

#[test]
fn steps_may_not_set_what_the_master_owns() {
    let errs = errors(
        "[[component]]\nname = \"a\"\nsteps = [ { name = \"s\", run = \"echo true\", set_property = \"release\" } ]\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("`set_property = \"release\"`: only requests and changes set \"release\", not steps"),
        "{errs:?}"
    );
    assert!(errors(
        "[[component]]\nname = \"a\"\nsteps = [ { name = \"s\", run = \"echo 1\", set_property = \"version\" } ]\n"
    )
    .is_empty());
}

#[test]
fn components_adopt_package_names_by_name() {
    let farm = parse("[[component]]\nname = \"grace\"\nadopts = [\"libgrace1\", \"grace-tools\"]\n").expect("parses");
    assert_eq!(farm.components[0].adopts, ["libgrace1", "grace-tools"]);
    let errs = errors("[[component]]\nname = \"grace\"\nadopts = [\"../x\"]\n");
    assert!(errs.iter().any(|e| e.contains("adopts") && e.contains("../x")), "{errs:?}");
}

#[test]
fn schedules_are_parsed_and_checked() {
    let good = format!("{EXAMPLE}\n[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Amsterdam\"\ncomponents = [\"*\"]\n");
    let cfg = parse(&good).expect("parses");
    let s = &cfg.schedules[0];
    assert_eq!((s.name.as_str(), s.timezone.as_deref(), s.components.len()), ("nightly", Some("Europe/Amsterdam"), 0));
    assert!(s.cron.matches(0, 3, 1, 1, 0));
    let bad = format!("{EXAMPLE}\n[[schedule]]\nname = \"n\"\ncron = \"0 25 * * *\"\ncomponents = [\"nope\"]\n");
    let e = errors(&bad);
    assert!(e.iter().any(|l| l.contains("`cron` of schedule \"n\": hour")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("unknown component \"nope\"")), "{e:?}");
}

#[test]
fn channels_default_to_dev_and_stable() {
    let cfg = parse(EXAMPLE).expect("example");
    let names: Vec<&str> = cfg.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["dev", "stable"]);
    let release: BTreeMap<String, String> = [("release".to_string(), "true".to_string())].into();
    let dev = cfg.channel("dev").expect("dev");
    assert!(dev.accepts.takes(&BTreeMap::new()) && !dev.accepts.takes(&release));
    assert_eq!(dev.promote_to, ["stable"]);
    assert!(cfg.channel("stable").expect("stable").accepts.takes(&release));
    assert_eq!(cfg.master.public_url(), "http://127.0.0.1:8010");
}

#[test]
fn channel_keys_validity_and_old_indexes_are_read_and_checked() {
    let good = r#"
[[channel]]
name = "dev"
accepts = "nightly"
key_type = "ed25519"
valid_until = "7d"
keep_old_indexes = "12h"

[[channel]]
name = "stable"
accepts = "release"
"#;
    let cfg = parse(good).expect("channels parse");
    let dev = cfg.channel("dev").expect("dev");
    assert_eq!(dev.key_type, crate::channel::KeyAlgorithm::Ed25519);
    assert_eq!(dev.valid_until, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(dev.keep_old_indexes, Duration::from_secs(12 * 3600));
    let stable = cfg.channel("stable").expect("stable");
    assert_eq!(stable.key_type, crate::channel::KeyAlgorithm::Rsa4096, "RSA 4096 unless asked");
    assert_eq!((stable.valid_until, stable.keep_old_indexes), (None, crate::channel::DEFAULT_KEEP_OLD_INDEXES));
    let bad = r#"
[[channel]]
name = "dev"
accepts = "nightly"
key_type = "dsa1024"
valid_until = "5m"

[[channel]]
name = "stable"
key = "keys/stable.asc"
key_type = "ed25519"
keep_old_indexes = "soon"
"#;
    let e = errors(bad);
    for want in [
        "`key_type` of channel \"dev\": unknown key type \"dsa1024\"; known: rsa4096, ed25519",
        "`valid_until` of channel \"dev\" must be at least an hour",
        "channel \"stable\" has a `key` file: `key_type` only chooses a generated key's kind",
        "`keep_old_indexes` of channel \"stable\"",
    ] {
        assert!(e.iter().any(|l| l.contains(want)), "{want} in {e:?}");
    }
}

#[test]
fn channels_are_parsed_and_checked() {
    let good = r#"
[master]
url = "https://farm.example.org/"

[[channel]]
name = "extras-devel"
accepts = "nightly"
keep = 3
promote_to = ["extras"]

[[channel]]
name = "extras"
key = "keys/release.asc"
passphrase = { credential = "release-pass" }
component = "contrib"
"#;
    let cfg = parse(good).expect("channels parse");
    assert_eq!(cfg.master.public_url(), "https://farm.example.org");
    let devel = cfg.channel("extras-devel").expect("devel");
    assert_eq!((devel.accepts, devel.keep), (Accepts::Nightly, Some(3)));
    let extras = cfg.channel("extras").expect("extras");
    assert_eq!(extras.accepts, Accepts::Promoted);
    assert_eq!(extras.passphrase, Some(SecretRef::Credential("release-pass".into())));
    assert_eq!(extras.component, "contrib");

    let bad = r#"
[[channel]]
name = "a"
accepts = "sometimes"
keep = 0
promote_to = ["nowhere"]
passphrase = "hunter2"

[[channel]]
name = "b"
passphrase = { file = "x", env = "Y" }
"#;
    let e = errors(bad);
    let has = |needle: &str| e.iter().any(|l| l.contains(needle));
    assert!(has("farm.toml:4:11: `accepts` of channel \"a\": unknown \"sometimes\""), "{e:?}");
    assert!(has("farm.toml:5:8: `keep` of channel \"a\" must be a whole number"), "{e:?}");
    assert!(has("promotes to unknown channel \"nowhere\""), "{e:?}");
    assert!(has("the passphrase itself never goes in the config"), "{e:?}");
    assert!(has("needs exactly one of `file`, `env`, `credential`"), "{e:?}");
}

#[test]
fn deb_targets_take_extra_repositories_with_their_keys() {
    let cfg = parse(
        r#"
[[target]]
name = "d12"
family = "deb"
suite = "bookworm"
mirror = "http://deb.example.org/debian"
repositories = [
  { url = "http://deb.example.org/debian", suite = "bookworm-backports", key = "keys/backports.asc" },
  { url = "https://vendor.example.com/apt", suite = "stable", components = ["main", "contrib"], key = "/etc/kiln/vendor.asc" },
]
"#,
    )
    .expect("parses");
    let repos = &cfg.targets[0].repositories;
    assert_eq!(repos.len(), 2);
    assert_eq!(repos[0].source(), "http://deb.example.org/debian bookworm-backports main");
    assert_eq!(repos[1].source(), "https://vendor.example.com/apt stable main contrib");
    assert_eq!(repos[1].key, "/etc/kiln/vendor.asc");

    let errs = errors(
        r#"
[[target]]
name = "d12"
family = "deb"
executor = "mock"
repositories = [{ url = "http://x/ y", suite = "s" }]

[[target]]
name = "el9"
family = "rpm"
executor = "sbuild"
repositories = [{ url = "http://x/", suite = "s", key = "k.asc" }]
mock_config = "--root"
"#,
    );
    let all = errs.join("\n");
    for want in [
        "`executor = \"mock\"` of [[target]]: mock builds rpm targets only",
        "must be an http(s):// or file:/ URL, got \"http://x/ y\"",
        "a repository of [[target]] needs `key`",
        "`executor = \"sbuild\"` of [[target]]: sbuild builds deb targets only",
        "are apt repositories, for deb targets only",
        "`mock_config` of [[target]] must name a mock config",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn before_and_after_wrap_the_standard_pipeline_only() {
    let cfg = parse(
        "[[component]]\nname = \"c\"\nbefore = [{ name = \"gen\", run = \"./autogen.sh\" }]\n\
         after = [{ name = \"lint\", run = \"lintian .kiln-out/*.changes\" }]\n",
    )
    .expect("parses");
    assert_eq!(cfg.components[0].before[0].name, "gen");
    assert_eq!(cfg.components[0].after[0].run, "lintian .kiln-out/*.changes");
    let errs = errors(
        "[[component]]\nname = \"c\"\nsteps = [{ name = \"s\", run = \"true\" }]\nbefore = [{ name = \"gen\", run = \"x\" }]\n\
         [[component]]\nname = \"d\"\nafter = [{ name = \"build\", run = \"x\" }]\n",
    )
    .join("\n");
    assert!(errs.contains("a component with `steps` runs only those"), "{errs}");
    assert!(errs.contains("step \"build\" of `before`/`after` must differ"), "{errs}");
}

#[test]
fn uploads_name_a_keyring_and_may_require_signatures() {
    assert_eq!(parse("").expect("empty").uploads, UploadsSection::default());
    let cfg = parse("[uploads]\nkeyring = \"keys/uploaders.asc\"\nrequire_signature = true\n").expect("parses");
    assert_eq!(cfg.uploads.keyring.as_deref(), Some("keys/uploaders.asc"));
    assert!(cfg.uploads.require_signature);
    let cfg = parse("[uploads]\nkeyring = \"/etc/kiln/uploaders.asc\"\n").expect("parses");
    assert!(!cfg.uploads.require_signature, "signatures are optional by default");

    assert_eq!(
        errors("[uploads]\nrequire_signature = true\n"),
        ["farm.toml:1:1: `require_signature` of [uploads] needs a `keyring` of the keys that may sign uploads"]
    );
    assert_eq!(
        errors("[uploads]\nkeyring = \" \"\nrequire_signature = \"yes\"\nkeys = 1\n"),
        [
            "farm.toml:2:11: `keyring` of [uploads] must name an armored OpenPGP public keyring file",
            "farm.toml:3:21: `require_signature` in [uploads] must be true or false",
            "farm.toml:4:1: unknown key `keys` in [uploads]; known keys: keyring, require_signature, incoming_dir, incoming_quiet, incoming_wait, mail",
        ]
    );
    assert_eq!(errors("uploads = 3\n"), ["farm.toml:1:11: [uploads] must be a table"]);
}

#[test]
fn mercurial_sources() {
    let cfg = parse(
        "[[component]]\nname = \"grace\"\nsource = { hg = \"https://hg.example.org/grace\", poll = \"5m\" }\n\
         [[component]]\nname = \"core\"\nsource = { hg = \"ssh://hg@hg.example.org/core\", branch = \"stable\", subdir = \"lib\" }\n",
    )
    .expect("parses");
    let Some(Source::Vcs(grace)) = &cfg.components[0].source else { panic!("a repository source") };
    assert_eq!((grace.vcs, grace.branch.as_str()), (crate::config::Vcs::Hg, "default"));
    let Some(Source::Vcs(core)) = &cfg.components[1].source else { panic!("a repository source") };
    assert_eq!((core.branch.as_str(), core.subdir.as_deref()), ("stable", Some("lib")));
    assert_eq!(
        errors("[[component]]\nname = \"a\"\nsource = { hg = \"hg@host:grace\", submodules = true }\n"),
        [
            "farm.toml:3:17: `hg` of component \"a\" must be an https://, http://, ssh:// or file:// URL without spaces",
            "farm.toml:3:34: unknown key `submodules` in the source of component \"a\"; known keys: hg, branch, subdir, paths, poll",
        ]
    );
}

#[test]
fn a_component_takes_uploads_only_of_signed_uploaders() {
    let component =
        "[[component]]\nname = \"libgrace\"\nsteps = [ { name = \"x\", run = \"true\" } ]\ntakes_uploads = true\n";
    let errs = errors(component);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("set [uploads] require_signature = true"), "{errs:?}");
    let signed = format!("[uploads]\nkeyring = \"keys/uploaders.asc\"\nrequire_signature = true\n{component}");
    let cfg = parse(&signed).expect("parses");
    assert!(cfg.component("libgrace").is_some_and(|c| c.takes_uploads));
    let rpm = errors("[[target]]\nname = \"el-9-debuginfo\"\nfamily = \"rpm\"\n");
    assert!(rpm[0].contains("may not end in \"-debuginfo\""), "{rpm:?}");
}

#[test]
fn workers_may_list_their_targets_and_a_target_none_lists_is_warned_about() {
    let farm = |w2: &str| {
        format!(
            "[[target]]\nname = \"d12\"\nfamily = \"deb\"\n[[target]]\nname = \"el9\"\nfamily = \"rpm\"\n\
             [[worker]]\nname = \"w1\"\ntargets = [\"d12\"]\n[[worker]]\nname = \"w2\"\n{w2}"
        )
    };
    // w2 lists none: it serves whatever it claims, so nothing is known to be unserved.
    let cfg = parse(&farm("")).expect("parses");
    assert!(cfg.workers[0].may_serve("d12") && !cfg.workers[0].may_serve("el9"));
    assert!(cfg.workers[1].may_serve("el9"));
    assert!(super::warnings(&cfg).is_empty());
    let cfg = parse(&farm("targets = [\"d12\"]\n")).expect("parses");
    assert_eq!(
        super::warnings(&cfg),
        ["target \"el9\": no [[worker]] lists it in `targets`, so its builds would wait for a worker for ever"]
    );
    let errs = errors(&farm("targets = [\"d13\"]\n"));
    assert_eq!(errs, ["farm.toml:12:12: [[worker]] \"w2\": unknown target \"d13\""]);
}

#[test]
fn masters_sharing_a_database_are_warned_of_a_lease_too_long_for_the_workers_fence() {
    let cfg = |master: &str| {
        let text = format!("[master]\n{master}\n\n[[target]]\nname = \"t\"\nfamily = \"deb\"\n");
        parse(&text).expect("valid")
    };
    let pg = "database = \"postgres://kiln@db/kiln\"";
    assert!(warnings(&cfg(pg)).is_empty(), "the defaults fit: {:?}", warnings(&cfg(pg)));
    let long = warnings(&cfg(&format!("{pg}\nlease = \"20s\"")));
    assert_eq!(long.len(), 1, "{long:?}");
    assert!(long[0].contains("[master] lease (20s) is over two fifths of worker_timeout (30s)"), "{long:?}");
    // One master on SQLite has no lease to worry about.
    assert!(warnings(&cfg("lease = \"20s\"")).is_empty());
}
