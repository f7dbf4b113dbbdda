//! A worker played by the test: it speaks the worker protocol to a real
//! master and says whatever the test tells it to, as a compromised worker
//! (or anyone holding a worker's token) could.

use base64::Engine;
use futures::{SinkExt, StreamExt};
use kiln_proto::wire::{self, Hello, Job, MasterMsg, WorkerMsg, PROTOCOL_VERSION};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub struct ScriptedWorker {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
}

impl ScriptedWorker {
    /// Connects to the worker port at `addr` as `name` with `token`,
    /// serving `targets`; returns the master's answer to the hello as well.
    pub async fn connect(addr: SocketAddr, name: &str, token: &str, targets: &[&str]) -> (ScriptedWorker, MasterMsg) {
        let stream = TcpStream::connect(addr).await.expect("connect to the worker port");
        let mut framed = Framed::new(stream, wire::codec());
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            name: name.into(),
            token: token.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            slots: 1,
            version: "scripted".into(),
            running: Vec::new(),
            finished: Vec::new(),
        };
        framed.send(wire::encode(&WorkerMsg::Hello(hello))).await.expect("send hello");
        let mut w = ScriptedWorker { framed };
        let answer = w.next().await.expect("an answer to the hello");
        (w, answer)
    }

    /// The next message from the master other than a ping, within 60 s.
    pub async fn next(&mut self) -> Option<MasterMsg> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.framed.next()).await.ok()??.ok()?;
            match wire::decode::<MasterMsg>(&frame).ok()? {
                MasterMsg::Ping => continue,
                other => return Some(other),
            }
        }
    }

    /// Waits for the master to assign a build.
    pub async fn job(&mut self) -> Job {
        loop {
            match self.next().await.expect("the master assigns a build") {
                MasterMsg::Assign(job) => return *job,
                _ => continue,
            }
        }
    }

    pub async fn send(&mut self, msg: WorkerMsg) {
        self.framed.send(wire::encode(&msg)).await.expect("send to the master");
    }

    /// Uploads `bytes` as artifact `name` of `build_id`, whole.
    pub async fn upload(&mut self, build_id: i64, name: &str, bytes: &[u8]) {
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.send(WorkerMsg::ArtifactChunk { build_id, name: name.into(), offset: 0, data }).await;
        let sha256 = hex::encode(Sha256::digest(bytes));
        self.send(WorkerMsg::ArtifactDone { build_id, name: name.into(), size: bytes.len() as u64, sha256 }).await;
    }
}
