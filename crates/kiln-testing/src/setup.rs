//! Set-up that several test files share: the example farm, a farm of one
//! job on two workers, a worker behind a [`Proxy`], build requests, and
//! times in the store's units.

use crate::{Farm, Proxy};
use kiln_client::Client;
use kiln_proto::api::BuildRequestBody;
use std::path::Path;
use std::time::Duration;

/// The example farm of the README (`examples/farm.toml`): workers `w1` and
/// `w2`, the targets [`EXAMPLE_TARGETS`], components `libgrace`, `opencore`
/// (depends on libgrace) and `slow` (a `sleep 600`).
pub const EXAMPLE_CONFIG: &str = include_str!("../../../examples/farm.toml");

/// The source trees the example farm's components point at.
pub const EXAMPLE_SOURCES: &[(&str, &str)] = &[
    ("src/libgrace/README", "libgrace sources\n"),
    ("src/opencore/README", "opencore sources\n"),
    ("src/slow/README", "slow sources\n"),
    ("src/grace-doc/README", "grace-doc sources\n"),
];

/// The example farm's two targets.
pub const EXAMPLE_TARGETS: &[&str] = &["debian-12-amd64", "el-9-x86_64"];

/// A farm of two workers `w1` and `w2`, one target `t` and one component
/// `job` whose only step (`run`) runs `run`.
pub fn one_job(run: &str) -> String {
    format!(
        "[[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\n\
         [[worker]]\nname = \"w2\"\ntoken_file = \"secrets/w2.token\"\n\n\
         [[target]]\nname = \"t\"\nfamily = \"deb\"\n\n\
         [[component]]\nname = \"job\"\nsteps = [ {{ name = \"run\", run = \"{run}\" }} ]\n"
    )
}

/// A step for [`one_job`] that appends its worker's name to the file the
/// `ledger` property names, says where it runs, and takes two seconds.
pub const LEDGER_JOB: &str = "echo $KILN_WORKER >> %(prop:ledger)s; echo on $KILN_WORKER; sleep 2";

/// A build request for `components` (all their targets) with `props`.
pub fn request(components: &[&str], props: &[(&str, &str)]) -> BuildRequestBody {
    BuildRequestBody {
        components: components.iter().map(|c| c.to_string()).collect(),
        properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

/// Requests `n` builds of [`one_job`]'s `job`, each with the `ledger`
/// property naming the file its step appends to; returns their ids.
pub async fn submit_jobs(client: &Client, ledger: &Path, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let created = client
            .create_builds(&request(&["job"], &[("ledger", ledger.to_str().expect("utf8 path"))]))
            .await
            .expect("create");
        ids.push(created.builds[0].id);
    }
    ids
}

/// The time `ago` before now, in microseconds since the Unix epoch (as the
/// store keeps times).
pub fn unix_micros_ago(ago: Duration) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    (now.as_micros() as i64) - (ago.as_micros() as i64)
}

impl Farm {
    /// The example farm ([`EXAMPLE_CONFIG`]) with its master started and
    /// workers `w1` and `w2` connected, each serving both targets with two
    /// slots.
    pub async fn example(bin: &Path) -> Farm {
        let mut farm = Farm::new(bin, EXAMPLE_CONFIG, EXAMPLE_SOURCES);
        farm.start_master().await;
        farm.start_workers(&["w1", "w2"], EXAMPLE_TARGETS, 2).await;
        farm
    }

    /// A farm with its master started and one worker `name` connected
    /// through a [`Proxy`] (serving `targets` with `slots` slots), to
    /// stall or cut the network between them.
    pub async fn running_via_proxy(
        bin: &Path,
        config: &str,
        sources: &[(&str, &str)],
        name: &str,
        targets: &[&str],
        slots: u32,
    ) -> (Farm, Proxy) {
        let mut farm = Farm::new(bin, config, sources);
        farm.start_master().await;
        let proxy = Proxy::start(farm.worker_port).await;
        farm.start_worker_via(name, targets, slots, proxy.addr);
        farm.wait_for_workers(&[name]).await;
        (farm, proxy)
    }

    /// Starts the workers `names`, each serving `targets` with `slots`
    /// slots, and waits until they are all connected.
    pub async fn start_workers(&mut self, names: &[&str], targets: &[&str], slots: u32) {
        for name in names {
            self.start_worker(name, targets, slots);
        }
        self.wait_for_workers(names).await;
    }

    /// The URL of the farm's SQLite database (the default store).
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path("data/kiln.db").display())
    }
}

/// A component whose build makes `PKG_VERSION_all.deb`: the package name
/// is the `pkg` property (default `kiln-tool`), the version the `version`
/// property for releases, else `1.0~bBUILD`. Its file holds the build id,
/// so two builds never make the same bytes.
pub const MAKE_DEB: &str = r#"set -e
name=${KILN_PROP_PKG:-kiln-tool}
if [ "$KILN_PROP_RELEASE" = true ]; then v=${KILN_PROP_VERSION:-1.0}; else v=1.0~b$KILN_BUILD_ID; fi
mkdir -p pkg/DEBIAN pkg/usr/share/$name
echo "built by $KILN_BUILD_ID" > pkg/usr/share/$name/built-by
printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: kiln tests <kiln@localhost>\nDescription: kiln test package\n a package made by a test build\n' "$name" "$v" > pkg/DEBIAN/control
dpkg-deb --root-owner-group -Zgzip -b pkg "${name}_${v}_all.deb" >/dev/null
echo "made ${name}_${v}_all.deb""#;

/// A component whose build makes a noarch `kiln-cafe-1.0-bBUILD` RPM with
/// rpmbuild, its summary and description in Latin-1 bytes ("Café" with
/// 0xE9), as old spec files have them and rpmbuild still allows on
/// request. (`%%` is a `%` once kiln has interpolated the step.)
pub const MAKE_LATIN1_RPM: &str = r#"set -e
e=$(printf '\351')
cat > cafe.spec <<SPEC
Name: kiln-cafe
Version: 1.0
Release: b$KILN_BUILD_ID
Summary: Caf$e au lait maker
License: MIT
BuildArch: noarch
%%description
Makes caf$e.
%%install
mkdir -p %%{buildroot}/usr/share/kiln-cafe
echo $KILN_BUILD_ID > %%{buildroot}/usr/share/kiln-cafe/made
%%files
/usr/share/kiln-cafe/made
SPEC
rpmbuild --define "_topdir $PWD/top" --define "_invalid_encoding_terminates_build 0" -bb cafe.spec >/dev/null 2>&1
cp top/RPMS/noarch/*.rpm ."#;

/// How many files there are under `dir`, at any depth (none: it is empty
/// but for empty directories, such as each master's artifact intake).
pub fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
        .sum()
}

/// A schema of its own on the test PostgreSQL (`KILN_TEST_POSTGRES`,
/// default the local server's `test` database): `url` connects into it;
/// `drop` removes it and all it holds.
pub struct PgSchema {
    admin: kiln_db::Store,
    name: String,
    pub url: String,
}

impl PgSchema {
    pub async fn new(prefix: &str) -> PgSchema {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base =
            std::env::var("KILN_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let name =
            format!("{prefix}_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), now % 1_000_000);
        let admin = kiln_db::Store::connect(&base).await.expect("PostgreSQL is needed (see DEVELOPERS.md)");
        admin.execute_raw(&format!("CREATE SCHEMA {name}")).await.expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        PgSchema { admin, name, url }
    }

    pub async fn drop(self) {
        self.admin.execute_raw(&format!("DROP SCHEMA {} CASCADE", self.name)).await.expect("drop schema");
        self.admin.close().await;
    }
}
