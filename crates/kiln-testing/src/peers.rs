//! Further masters of a test farm: the farm's config with their own
//! listen addresses, the same PostgreSQL database and data dir.

use crate::{free_addr, signal, wait_for, Farm};
use kiln_client::Client;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Another master of a farm: its own config file (the farm's, with its own
/// listen addresses), the same database and data dir.
pub struct Peer {
    pub http: SocketAddr,
    pub worker_port: SocketAddr,
    config: PathBuf,
    child: Option<Child>,
    runs: u32,
}

impl Farm {
    /// Adds another master to the farm (its config names a PostgreSQL
    /// database): the farm's config with its own listen addresses, the
    /// same data dir. Returns its number for the `peer_*` methods.
    pub fn add_peer(&mut self) -> usize {
        let (http, worker_port) = (free_addr(), free_addr());
        let text = std::fs::read_to_string(&self.config)
            .expect("read config")
            .replace(&format!("listen = \"{}\"", self.http), &format!("listen = \"{http}\""))
            .replace(
                &format!("worker_listen = \"{}\"", self.worker_port),
                &format!("worker_listen = \"{worker_port}\""),
            );
        let n = self.peers.len();
        let config = self.path(&format!("farm-peer{n}.toml"));
        std::fs::write(&config, text).expect("write peer config");
        self.peers.push(Peer { http, worker_port, config, child: None, runs: 0 });
        n
    }

    /// Starts peer `n` and waits until its API answers.
    pub async fn start_peer(&mut self, n: usize) {
        let log = {
            let p = &mut self.peers[n];
            p.runs += 1;
            self.dir.path().join(format!("master-peer{n}-{}.log", p.runs))
        };
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(&self.bin)
            .arg("master")
            .arg("--allow-root")
            .arg("--config")
            .arg(&self.peers[n].config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kiln master");
        self.peers[n].child = Some(child);
        let client = self.peer_client(n);
        let ok = wait_for(Duration::from_secs(30), || async { client.status().await.is_ok() }).await;
        assert!(ok, "master peer {n} did not come up:\n{}", self.peer_log(n));
    }

    /// An admin client of peer `n`.
    pub fn peer_client(&self, n: usize) -> Client {
        Client::new(&format!("http://{}", self.peers[n].http), Some(self.admin_token())).expect("client")
    }

    /// `kill -9` of peer `n`.
    pub fn kill_peer(&mut self, n: usize) {
        if let Some(mut c) = self.peers[n].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) peer `n`: silent, its
    /// connections open.
    pub fn pause_peer(&self, n: usize, paused: bool) {
        if let Some(c) = &self.peers[n].child {
            signal(c.id() as i32, if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Peer `n`'s log so far (all its runs).
    pub fn peer_log(&self, n: usize) -> String {
        (1..=self.peers[n].runs)
            .map(|i| std::fs::read_to_string(self.path(&format!("master-peer{n}-{i}.log"))).unwrap_or_default())
            .collect()
    }
}
