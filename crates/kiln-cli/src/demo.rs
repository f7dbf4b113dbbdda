//! `kiln demo`: the example farm, running. Writes the example config into a
//! directory, starts a master and two workers in this process, builds the
//! example components in dependency order and leaves the farm up.

use anyhow::Context;
use clap::Args;
use kiln_proto::api::BuildRequestBody;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const FARM: &str = include_str!("../../../examples/farm.toml");
const SOURCES: &[(&str, &str)] = &[
    ("src/libgrace/README", include_str!("../../../examples/src/libgrace/README")),
    ("src/opencore/README", include_str!("../../../examples/src/opencore/README")),
    ("src/slow/README", include_str!("../../../examples/src/slow/README")),
    ("src/grace-doc/README", include_str!("../../../examples/src/grace-doc/README")),
    ("src/hello/hello.c", include_str!("../../../examples/src/hello/hello.c")),
    ("src/hello/kiln-demo-hello.spec", include_str!("../../../examples/src/hello/kiln-demo-hello.spec")),
    ("src/hello/debian/control", include_str!("../../../examples/src/hello/debian/control")),
    ("src/hello/debian/rules", include_str!("../../../examples/src/hello/debian/rules")),
    ("src/hello/debian/changelog", include_str!("../../../examples/src/hello/debian/changelog")),
    ("src/hello/debian/source/format", include_str!("../../../examples/src/hello/debian/source/format")),
];

/// Adds a real package (`hello`, one source tree with `debian/` and a
/// `.spec`) to the demo farm, on the targets this machine can build: a deb
/// root needs mmdebstrap, bubblewrap and a Debian mirror (the host's own),
/// an rpm build rpmbuild and bubblewrap. Says what it leaves out and why.
fn add_packages(farm: &str) -> (String, bool) {
    let mut farm = farm.to_string();
    let mut targets = Vec::new();
    let deb_tools = ["mmdebstrap", "bwrap", "dpkg-source"].iter().all(|t| crate::on_path(t));
    match (deb_tools, kiln_worker::pipeline::host_debian_mirror()) {
        // The example's deb target takes each worker's own mirror (`host`).
        (true, Some(_)) => targets.push("debian-12-amd64"),
        (false, _) => eprintln!("kiln demo: no .deb build (it needs mmdebstrap, bubblewrap and dpkg-dev)"),
        (true, None) => eprintln!("kiln demo: no .deb build (no Debian mirror in this host's apt sources)"),
    }
    if ["rpmbuild", "bwrap"].iter().all(|t| crate::on_path(t)) {
        targets.push("el-9-x86_64");
    } else {
        eprintln!("kiln demo: no .rpm build (it needs rpm and bubblewrap)");
    }
    if targets.is_empty() {
        return (farm, false);
    }
    let list = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    farm.push_str(&format!(
        "\n# Added by kiln demo: a real package, built with the standard pipelines.\n\
         [[component]]\nname = \"hello\"\nsource = {{ path = \"src/hello\" }}\ntargets = [{list}]\n"
    ));
    (farm, true)
}

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the demo farm's config, database and logs.
    #[arg(long, default_value = "kiln-demo")]
    pub dir: PathBuf,
    /// Web/API address; a free port is used if this one is taken.
    #[arg(long, default_value = "127.0.0.1:8010")]
    pub listen: SocketAddr,
    /// Worker port; a free port is used if this one is taken.
    #[arg(long, default_value = "127.0.0.1:9989")]
    pub worker_listen: SocketAddr,
    /// Stop once the builds are done instead of keeping the farm up.
    #[arg(long)]
    pub exit: bool,
}

fn usable(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if TcpListener::bind(addr).is_ok() {
        return Ok(addr);
    }
    let l = TcpListener::bind(SocketAddr::new(addr.ip(), 0)).context("no free port for the demo")?;
    Ok(l.local_addr()?)
}

fn write_secret(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut raw = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    kiln_repo::fsio::write_atomic_mode(path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir.join("secrets")).with_context(|| format!("cannot create {}", dir.display()))?;
    let listen = usable(args.listen)?;
    let worker_listen = usable(args.worker_listen)?;
    let farm = FARM
        .replace("listen = \"127.0.0.1:8010\"", &format!("listen = \"{listen}\""))
        .replace("worker_listen = \"127.0.0.1:9989\"", &format!("worker_listen = \"{worker_listen}\""));
    let (farm, packages) = add_packages(&farm);
    let config = dir.join("farm.toml");
    std::fs::write(&config, farm).with_context(|| format!("cannot write {}", config.display()))?;
    for (path, text) in SOURCES {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text)?;
    }
    std::fs::set_permissions(dir.join("src/hello/debian/rules"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    for w in ["w1", "w2"] {
        write_secret(&dir.join(format!("secrets/{w}.token")))?;
    }

    let mut master = kiln_master::start(&config).await?;
    let url = format!("http://{}", master.http_addr);
    let targets = vec!["debian-12-amd64".to_string(), "el-9-x86_64".to_string()];
    let mut workers = tokio::task::JoinSet::new();
    for w in ["w1", "w2"] {
        let token = std::fs::read_to_string(dir.join(format!("secrets/{w}.token")))?.trim().to_string();
        // The demo builds its own example components: no sandbox needed.
        let opts = kiln_worker::WorkerOptions::in_process(
            master.worker_addr.to_string(),
            w.to_string(),
            token,
            targets.clone(),
            2,
            dir.join("workers").join(w),
        );
        workers.spawn(kiln_worker::run(opts));
    }
    let client = kiln_client::Client::new(&url, Some(master.admin_token.clone()))?;
    // Give the workers a moment to connect, so the first builds spread out.
    for _ in 0..50 {
        if client.status().await?.workers_connected == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut components = vec!["libgrace".to_string(), "opencore".to_string(), "grace-doc".to_string()];
    if packages {
        components.push("hello".into());
        eprintln!(
            "kiln demo: master on {url}, two workers; building libgrace, opencore (after libgrace), grace-doc \
             and the hello package"
        );
        eprintln!(
            "kiln demo: the first .deb build makes its build root with mmdebstrap from the host's Debian mirror: \
             from half a minute to a few minutes, the log says every half minute that it is still at it"
        );
    } else {
        eprintln!(
            "kiln demo: master on {url}, two workers; building libgrace, opencore (opencore waits for libgrace) \
             and grace-doc"
        );
    }
    let created = client
        .create_builds(&BuildRequestBody {
            components,
            // Nightly builds: each gets its own version, so the demo can run
            // again in the same directory and publish again.
            reason: Some("kiln demo".into()),
            ..Default::default()
        })
        .await?;
    let ok = crate::follow::follow_request(&client, created.request_id, false).await?;
    let token_path = master.admin_token_path.display().to_string();
    eprintln!();
    eprintln!("The farm is up at {url}  (JSON API: {url}/api/v1/builds)");
    eprintln!("Try, in another terminal:");
    eprintln!("  export KILN_URL={url} KILN_TOKEN=$(cat {token_path})");
    eprintln!("  kiln builds");
    eprintln!("  kiln log {}", created.builds.first().map(|b| b.id).unwrap_or(1));
    if let Some(pkg) = created.builds.iter().find(|b| b.component == "hello") {
        eprintln!("  kiln fetch {} packages/                 # the .deb (or .rpm) the farm built", pkg.id);
    }
    eprintln!("  kiln build --all --follow                     # slow takes 10 minutes: try `kiln cancel` on it");
    {
        // grace-doc always, hello where the machine builds it.
        let published = client.packages("dev", None, None).await.unwrap_or_default();
        eprintln!();
        eprintln!("Published to the dev channel (signed APT/YUM repositories, {} files):", published.len());
        for p in &published {
            eprintln!("  {:<24} {:<30} {:<7} {url}/repos/dev/{}", p.name, p.version, p.arch, p.path);
        }
        let suite = "bookworm"; // the example deb target's
        eprintln!("Use them:");
        eprintln!("  curl -o /etc/apt/keyrings/kiln-dev.asc {url}/repos/dev/key.asc");
        eprintln!("  echo 'deb [signed-by=/etc/apt/keyrings/kiln-dev.asc] {url}/repos/dev/apt {suite} main' > /etc/apt/sources.list.d/kiln-dev.list");
        eprintln!("  dnf --repofrompath=kiln,{url}/repos/dev/yum/el-9-x86_64 --setopt=kiln.gpgkey={url}/repos/dev/key.asc --setopt=kiln.repo_gpgcheck=1 repoquery --repo kiln");
        if let Some(p) = published.iter().find(|p| p.kind == "deb") {
            eprintln!("  kiln repo list dev;  kiln repo promote {} {} --from dev --to stable", p.name, p.version);
        }
    }
    if args.exit {
        workers.shutdown().await;
        master.shutdown().await;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    eprintln!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = crate::shutdown_signal() => {}
        _ = master.wait() => anyhow::bail!("the master stopped unexpectedly"),
    }
    workers.shutdown().await;
    master.shutdown().await;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
