//! The test harness: a farm of real `kiln master` and `kiln worker`
//! processes on free loopback ports, in a temporary directory that is
//! removed afterwards. Every process a `Farm` starts, it stops (also when a
//! test fails). Waits are bounded polls of the API, never bare sleeps.

use anyhow::{bail, Context};
use kiln_client::Client;
use kiln_proto::api::Build;
use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod clients;
mod peers;
pub mod scripted;
mod servers;
mod setup;
pub use clients::{python_gunzip, DnfClient};
pub use peers::Peer;
use servers::processes_with_env;
pub use servers::{git, hook_signature, listening, mails, GitHost, Server};
pub use setup::{files_under, PgSchema};
pub use setup::{
    one_job, request, submit_jobs, unix_micros_ago, EXAMPLE_CONFIG, EXAMPLE_SOURCES, EXAMPLE_TARGETS, LEDGER_JOB,
    MAKE_DEB, MAKE_LATIN1_RPM,
};

/// A free loopback port for a process the test starts, to bind itself.
///
/// A port the kernel hands out for `:0` lies in the ephemeral range, where
/// any outgoing connection of a test running beside this one may take it as
/// its local port before the process binds it ("Address already in use").
/// So ports are taken below that range, each one once per test process, from
/// an offset spread by the process id, and checked free by binding them.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u32>().ok()))
        .unwrap_or(32_768);
    // A host whose ephemeral range starts this low leaves no room below it.
    assert!(ephemeral_low > LOWEST + 1_000, "the ephemeral port range starts at {ephemeral_low}: no room below it");
    let span = ephemeral_low - LOWEST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().expect("a bound socket's address");
        }
    }
    panic!("no free loopback port below {ephemeral_low}")
}

pub struct Farm {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    pub config: PathBuf,
    pub http: SocketAddr,
    pub worker_port: SocketAddr,
    master: Option<Child>,
    master_runs: u32,
    /// Where the master starts and how its `--config` is written: from the
    /// farm's directory's parent, as `DIR/farm.toml`, when set.
    relative_config: bool,
    workers: HashMap<String, Child>,
    /// Set when the master serves HTTPS: the CA its certificate comes from.
    pub web_ca: Option<PathBuf>,
    /// Further masters sharing the farm's database and data dir.
    pub peers: Vec<Peer>,
}

/// A worker `w1` (token in `secrets/w1.token`) and a target `t`: the start
/// of most test configs.
pub const ONE_WORKER: &str = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "deb"
"#;

/// Default master settings for tests: short timeouts so lost workers are
/// noticed quickly.
pub const TEST_MASTER_EXTRA: &str =
    "worker_timeout = \"3s\"\nheartbeat = \"500ms\"\nkill_grace = \"2s\"\nlease = \"3s\"\n";

impl Farm {
    /// Writes `config` (its `[master]` listen addresses replaced by free
    /// ports, the test timeouts added), a token file per `[[worker]]`, and the
    /// given source files.
    pub fn new(bin: &Path, config: &str, sources: &[(&str, &str)]) -> Farm {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = free_addr();
        let worker_port = free_addr();
        // The test timeouts, but for those the config sets itself.
        let sets = |key: &str| config.lines().any(|l| l.trim_start().starts_with(&format!("{key} =")));
        let extra: String = TEST_MASTER_EXTRA
            .lines()
            .filter(|l| !sets(l.split(" =").next().unwrap_or_default()))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut text = String::new();
        let mut in_master = false;
        for line in config.lines() {
            let t = line.trim_start();
            if t.starts_with('[') {
                in_master = t.starts_with("[master]");
            }
            if in_master && (t.starts_with("listen") || t.starts_with("worker_listen")) {
                continue;
            }
            text.push_str(line);
            text.push('\n');
            if t.starts_with("[master]") {
                text.push_str(&format!("listen = \"{http}\"\nworker_listen = \"{worker_port}\"\n{extra}"));
            }
        }
        if !config.contains("[master]") {
            text = format!("[master]\nlisten = \"{http}\"\nworker_listen = \"{worker_port}\"\n{extra}\n{text}");
        }
        let config_path = dir.path().join("farm.toml");
        std::fs::write(&config_path, &text).expect("write config");
        std::fs::create_dir_all(dir.path().join("secrets")).expect("secrets dir");
        for (i, line) in text.lines().enumerate() {
            if let Some(rest) = line.trim().strip_prefix("token_file = \"") {
                let file = rest.split('"').next().unwrap_or_default();
                std::fs::write(dir.path().join(file), format!("worker-token-{i}-{}\n", std::process::id()))
                    .expect("write token");
            }
        }
        for (path, content) in sources {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("source dir");
            std::fs::write(&p, content).expect("write source");
        }
        Farm {
            dir,
            bin: bin.to_path_buf(),
            config: config_path,
            http,
            worker_port,
            master: None,
            master_runs: 0,
            relative_config: false,
            workers: HashMap::new(),
            web_ca: None,
            peers: Vec::new(),
        }
    }

    /// A farm with its master started and one worker `name` connected,
    /// serving `targets` with `slots` slots.
    pub async fn running(
        bin: &Path,
        config: &str,
        sources: &[(&str, &str)],
        name: &str,
        targets: &[&str],
        slots: u32,
    ) -> Farm {
        let mut farm = Farm::new(bin, config, sources);
        farm.start_master().await;
        farm.start_worker(name, targets, slots);
        farm.wait_for_workers(&[name]).await;
        farm
    }

    /// The running master's process id.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn url(&self) -> String {
        let scheme = if self.web_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }

    fn client_with(&self, token: Option<String>) -> Client {
        match &self.web_ca {
            Some(ca) => Client::with_ca(&self.url(), token, &std::fs::read(ca).expect("CA")).expect("client"),
            None => Client::new(&self.url(), token).expect("client"),
        }
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.path("data/admin.token")).expect("admin token").trim().to_string()
    }

    pub fn client(&self) -> Client {
        self.client_with(Some(self.admin_token()))
    }

    /// The newest hundred builds, newest first.
    pub async fn all_builds(&self) -> Vec<Build> {
        let query = kiln_client::BuildQuery { limit: Some(100), ..Default::default() };
        self.client().builds(&query).await.expect("builds").builds
    }

    pub fn anonymous(&self) -> Client {
        self.client_with(None)
    }

    /// Logs in to the web interface with `token` and reads `page`, which
    /// must greet `who`: the session cookie and the page's CSRF token, for
    /// posting its forms.
    pub async fn web_login(&self, http: &reqwest::Client, token: &str, page: &str, who: &str) -> (String, String) {
        let login = http
            .post(format!("{}/login", self.url()))
            .form(&[("token", token), ("next", "/")])
            .send()
            .await
            .expect("login");
        assert_eq!(login.status().as_u16(), 303, "logged in");
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_string();
        let html = http
            .get(format!("{}{page}", self.url()))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("page");
        assert!(html.contains(&format!("Logged in as {who}")), "{html}");
        let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf");
        (cookie, csrf.to_string())
    }

    /// The master's log so far (all its runs).
    pub fn master_log(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.master_runs {
            out.push_str(&std::fs::read_to_string(self.path(&format!("master-{i}.log"))).unwrap_or_default());
        }
        out
    }

    /// A `kiln` command with the farm's URL and admin token in its environment.
    pub fn kiln(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KILN_URL", self.url()).env("RUST_LOG", "warn");
        if self.path("data/admin.token").exists() {
            c.env("KILN_TOKEN", self.admin_token());
        }
        c
    }

    /// Starts `kiln master` and waits until its API answers.
    pub async fn start_master(&mut self) {
        self.start_master_with(None, &[]).await
    }

    /// Starts `kiln master` from the farm directory's parent with a
    /// relative `--config DIR/farm.toml`, as a user in a checkout would.
    pub async fn start_master_with_relative_config(&mut self) {
        self.relative_config = true;
        self.start_master_with(None, &[]).await
    }

    /// Starts `kiln master` under `umask` (as a daemon manager might) with
    /// extra environment, and waits until its API answers.
    pub async fn start_master_with(&mut self, umask: Option<u32>, env: &[(&str, &str)]) {
        self.master_runs += 1;
        let parent = self.dir.path().parent().expect("the farm dir has a parent").to_path_buf();
        let config = match self.relative_config {
            true => self.config.strip_prefix(&parent).expect("the config is in the farm dir").to_path_buf(),
            false => self.config.clone(),
        };
        let log = std::fs::File::create(self.path(&format!("master-{}.log", self.master_runs))).expect("log file");
        let mut cmd = match umask {
            None => {
                let mut c = Command::new(&self.bin);
                // Tests run as root in CI; the master refuses that unless told.
                c.arg("master").arg("--allow-root").arg("--config").arg(&config);
                c
            }
            Some(mask) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("umask {mask:03o}; exec \"$0\" master --allow-root --config \"$1\""))
                    .arg(&self.bin)
                    .arg(&config);
                c
            }
        };
        if self.relative_config {
            cmd.current_dir(&parent);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().expect("spawn kiln master");
        self.master = Some(child);
        let client = self.anonymous();
        // Up means answering; a master that requires a login to read answers 401.
        let ok = wait_for(Duration::from_secs(30), || async {
            matches!(client.status().await, Ok(_) | Err(kiln_client::ClientError::Api { status: 401, .. }))
        })
        .await;
        if !ok {
            panic!("the master did not come up:\n{}", self.master_log());
        }
    }

    /// `kill -9` of the master.
    pub fn kill_master(&mut self) {
        if let Some(mut c) = self.master.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_worker(&mut self, name: &str, targets: &[&str], slots: u32) {
        self.start_worker_with(name, targets, slots, &[]);
    }

    /// Starts a worker that does not run as root: as user `uid:gid`, owning
    /// its work dir and token file (the farm's directory is opened to it).
    pub fn start_unprivileged_worker(&mut self, name: &str, targets: &[&str], slots: u32, uid: u32, gid: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("open the farm dir");
        let workdir = self.path(&format!("workers/{name}"));
        std::fs::create_dir_all(&workdir).expect("work dir");
        std::os::unix::fs::chown(self.path("workers"), Some(uid), Some(gid)).expect("chown");
        std::os::unix::fs::chown(&workdir, Some(uid), Some(gid)).expect("chown");
        let token_file = self.path(&format!("secrets/{name}.token"));
        std::fs::set_permissions(self.path("secrets"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(&token_file, Some(uid), Some(gid)).expect("chown");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // Without `--build-user root`: a worker that is not root runs build
        // code as its own user in a user namespace.
        self.spawn_worker(name, targets, slots, Some((uid, gid)), &["--default-build-user"]);
    }

    /// Starts a worker that reaches the master through `via` (a [`Proxy`]).
    pub fn start_worker_via(&mut self, name: &str, targets: &[&str], slots: u32, via: SocketAddr) {
        let port = self.worker_port;
        self.worker_port = via;
        self.start_worker_with(name, targets, slots, &[]);
        self.worker_port = port;
    }

    /// Starts a worker with extra command-line arguments (e.g. `--tls-ca`).
    pub fn start_worker_with(&mut self, name: &str, targets: &[&str], slots: u32, extra: &[&str]) {
        self.spawn_worker(name, targets, slots, None, extra);
    }

    /// Starts `kiln worker`, as user `as_user` (`uid`, `gid`) when given.
    fn spawn_worker(&mut self, name: &str, targets: &[&str], slots: u32, as_user: Option<(u32, u32)>, extra: &[&str]) {
        let token_file = self.path(&format!("secrets/{name}.token"));
        let log = std::fs::File::create(self.path(&format!("worker-{name}.log"))).expect("log file");
        let mut cmd = match as_user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--"])
                    .arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("worker").arg("--master").arg(self.worker_port.to_string()).arg("--name").arg(name);
        for p in &self.peers {
            cmd.arg("--master").arg(p.worker_port.to_string());
        }
        // A worker with a client certificate may have no token.
        if token_file.exists() {
            cmd.arg("--token-file").arg(token_file);
        }
        // Test steps write beside the farm (ledgers, marks), so they keep the
        // worker's user unless a test asks for the default.
        if !extra.contains(&"--build-user") && !extra.contains(&"--default-build-user") {
            cmd.args(["--build-user", "root"]);
        }
        let extra: Vec<&str> = extra.iter().copied().filter(|a| *a != "--default-build-user").collect();
        let child = cmd
            .arg("--targets")
            .arg(targets.join(","))
            .arg("--slots")
            .arg(slots.to_string())
            .arg("--workdir")
            .arg(self.path(&format!("workers/{name}")))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kiln worker");
        self.workers.insert(name.to_string(), child);
    }

    /// `kill -9` of a worker.
    pub fn kill_worker(&mut self, name: &str) {
        if let Some(mut c) = self.workers.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("worker-{name}.log"))).unwrap_or_default()
    }

    /// Waits until exactly these workers are connected.
    pub async fn wait_for_workers(&self, names: &[&str]) {
        let client = self.anonymous();
        let ok = wait_for(Duration::from_secs(30), || async {
            let Ok(ws) = client.workers().await else {
                return false;
            };
            names.iter().all(|n| ws.iter().any(|w| &w.name == n && w.connected))
        })
        .await;
        if !ok {
            let workers: String = names.iter().map(|n| format!("worker {n}:\n{}\n", self.worker_log(n))).collect();
            panic!("workers {names:?} did not connect:\n{}\n{workers}", self.master_log());
        }
    }

    /// Waits for a build to finish and returns it.
    pub async fn wait_finished(&self, id: i64, within: Duration) -> Build {
        let client = self.anonymous();
        let deadline = Instant::now() + within;
        loop {
            match client.build(id).await {
                Ok(b) if b.state.is_finished() => return b,
                Ok(b) if Instant::now() > deadline => {
                    let workers: Vec<String> =
                        self.workers.keys().map(|w| format!("--- worker {w}:\n{}", self.worker_log(w))).collect();
                    panic!(
                        "build {id} did not finish within {within:?}: {b:?}\n--- master:\n{}\n{}",
                        self.master_log(),
                        workers.join("\n")
                    )
                }
                Err(e) if Instant::now() > deadline => panic!("cannot read build {id}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until `check` holds for the build.
    pub async fn wait_build(&self, id: i64, within: Duration, check: impl Fn(&Build) -> bool) -> Build {
        let client = self.anonymous();
        let deadline = Instant::now() + within;
        loop {
            let b = client.build(id).await.expect("read build");
            if check(&b) {
                return b;
            }
            if Instant::now() > deadline {
                panic!("build {id} never reached the expected state: {b:?}\n{}", self.master_log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) a worker process, to make it
    /// go silent without closing its connection.
    pub fn pause_worker(&self, name: &str, paused: bool) {
        if let Some(c) = self.workers.get(name) {
            signal(c.id() as i32, if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Sends SIGHUP to the master.
    pub fn hup_master(&self) {
        if let Some(c) = &self.master {
            signal(c.id() as i32, libc::SIGHUP);
        }
    }
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with plain integers.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        // Workers get SIGTERM first so they stop their builds' processes.
        for c in self.workers.values() {
            signal(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, mut c) in self.workers.drain() {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_master();
        for n in 0..self.peers.len() {
            self.pause_peer(n, false);
            self.kill_peer(n);
        }
        // Whatever a `kill -9`ed worker of this farm left behind.
        for pid in processes_with_env("KILN_WORKER_DIR=", &self.dir.path().display().to_string()) {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// Polls `check` until it holds or `within` passes; returns whether it held.
pub async fn wait_for<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Farm {
    /// Processes of this farm's workers that belong to a build: what is
    /// left of its steps.
    pub fn build_processes(&self, build_id: i64) -> Vec<i32> {
        let mine = processes_with_env("KILN_WORKER_DIR=", &self.dir.path().display().to_string());
        mine.into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0).any(|kv| kv == format!("KILN_BUILD_ID={build_id}").as_bytes())
                })
            })
            .collect()
    }
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> anyhow::Result<(i32, String, String)> {
    let out = cmd.output().context("cannot run command")?;
    let code = match out.status.code() {
        Some(c) => c,
        None => bail!("command killed by a signal"),
    };
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A TCP proxy on loopback that can be paused (while paused it forwards
/// nothing in either direction but keeps both connections open, like a
/// network partition) and can cut the connections it carries (like a
/// network that drops them). Stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: tokio::sync::watch::Sender<bool>,
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (paused, pause_rx) = tokio::sync::watch::channel(false);
        let (cuts, cut_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                conns.spawn(pipe(cr, sw, pause_rx.clone(), cut.clone()));
                conns.spawn(pipe(sr, cw, pause_rx.clone(), cut));
            }
        });
        Proxy { addr, paused, cuts, task }
    }

    pub fn pause(&self, paused: bool) {
        let _ = self.paused.send(paused);
    }

    /// Drops every connection the proxy carries now; new ones go through.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
    mut cut: tokio::sync::watch::Receiver<u64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while *paused.borrow_and_update() {
            tokio::select! {
                r = paused.changed() => if r.is_err() { return },
                _ = cut.changed() => return,
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = paused.changed() => continue,
            _ = cut.changed() => return,
        };
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            _ = cut.changed() => return,
        }
    }
}

pub use kiln_worker::pipeline::{host_debian_mirror, host_debian_sources};

/// Downloads a source package from a Debian mirror (found through the
/// suite's `Sources.xz`) into `dest` and returns the path of its `.dsc`.
pub fn fetch_debian_source(mirror: &str, suite: &str, package: &str, dest: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dest)?;
    let index = format!("{mirror}/dists/{suite}/main/source/Sources.xz");
    let out = Command::new("sh")
        .arg("-c")
        .arg("curl -fsS \"$1\" | xz -dc")
        .arg("sh")
        .arg(&index)
        .output()
        .context("cannot run curl | xz")?;
    if !out.status.success() {
        bail!("cannot fetch {index}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let stanza = text
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {package}")))
        .with_context(|| format!("{package} is not in {index}"))?;
    let directory = stanza.lines().find_map(|l| l.strip_prefix("Directory: ")).context("no Directory field")?;
    let mut files = Vec::new();
    let mut in_files = false;
    for l in stanza.lines() {
        if l.starts_with("Files:") {
            in_files = true;
        } else if in_files && l.starts_with(' ') {
            files.extend(l.split_whitespace().nth(2).map(str::to_string));
        } else {
            in_files = false;
        }
    }
    let mut dsc = None;
    for f in &files {
        let url = format!("{mirror}/{directory}/{f}");
        let status = Command::new("curl").args(["-fsS", "-o"]).arg(dest.join(f)).arg(&url).status()?;
        if !status.success() {
            bail!("cannot download {url}");
        }
        if f.ends_with(".dsc") {
            dsc = Some(dest.join(f));
        }
    }
    dsc.context("the source package has no .dsc")
}

/// An apt client that touches no system state: its own sources, lists,
/// cache and trust (only `signed-by=` keys), reading the host's dpkg status
/// so packages the host has count as installed.
pub struct AptClient {
    pub dir: PathBuf,
}

impl AptClient {
    /// Sets up `dir` for apt with the given `deb ...` source lines.
    pub fn new(dir: &Path, sources: &[String]) -> AptClient {
        for d in
            ["lists/partial", "cache/archives/partial", "etc/preferences.d", "etc/apt.conf.d", "etc/sources.list.d"]
        {
            std::fs::create_dir_all(dir.join(d)).expect("apt dirs");
        }
        std::fs::write(dir.join("etc/sources.list"), sources.join("\n") + "\n").expect("sources.list");
        AptClient { dir: dir.to_path_buf() }
    }

    /// `apt-get` with the isolating options and `args`; (exit code, stdout, stderr).
    pub fn apt_get(&self, args: &[&str]) -> (i32, String, String) {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let opts = [
            format!("Dir::Etc={}", d("etc")),
            format!("Dir::Etc::SourceList={}", d("etc/sources.list")),
            format!("Dir::Etc::SourceParts={}", d("etc/sources.list.d")),
            format!("Dir::Etc::Parts={}", d("etc/apt.conf.d")),
            format!("Dir::Etc::PreferencesParts={}", d("etc/preferences.d")),
            "Dir::Etc::Trusted=/dev/null".to_string(),
            format!("Dir::Etc::TrustedParts={}", d("etc/trusted.gpg.d")),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            "Dir::State::status=/var/lib/dpkg/status".to_string(),
            "Debug::NoLocking=1".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ];
        let mut cmd = Command::new("apt-get");
        for o in &opts {
            cmd.arg("-o").arg(o);
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd).unwrap_or_else(|e| (-1, String::new(), e.to_string()))
    }

    /// The `.deb` files apt downloaded.
    pub fn downloaded(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("cache/archives"))
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "deb")).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// An HTTP receiver on loopback (a webhook's or a forge API's far end): each
/// request's head (request line and headers, lower-cased) and body go to the
/// returned channel; it answers 200 `{}`. Returns its base URL
/// (`http://127.0.0.1:PORT`). Stops when the test's runtime ends.
pub async fn http_recorder() -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, mut body) = loop {
                    let Ok(n) = sock.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..i]).to_lowercase(), buf[i + 4..].to_vec());
                    }
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while body.len() < len {
                    let Ok(n) = sock.read(&mut chunk).await else { return };
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
                let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
            });
        }
    });
    (url, rx)
}
