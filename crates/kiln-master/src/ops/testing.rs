//! A master without processes or ports for the operations' tests: a real
//! store in a temporary SQLite file, the config from text, and channels
//! standing in for the dispatcher and the publisher, so a test sees exactly
//! what an operation asked of them (and answers it, when it must).

use crate::artifacts::ArtifactStore;
use crate::caller::Caller;
use crate::events::{Event, PublishRequest};
use crate::farm::LoadedFarm;
use crate::logs::LogStore;
use crate::shared::Shared;
use kiln_core::perm::{Permission, Permissions};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// A farm of one deb target, a shell component and a git component.
pub const FARM: &str = r#"
[master]
data_dir = "data"

[[worker]]
name = "w1"
token_file = "w1.token"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"
mirror = "http://127.0.0.1:9/debian"

[[component]]
name = "hello"
properties = { flavour = "plain" }
steps = [{ name = "make", run = "make" }]

[[component]]
name = "pkg"
source = { git = "https://example.org/pkg.git" }
"#;

pub struct Tester {
    pub shared: Arc<Shared>,
    /// What operations told the dispatcher.
    pub events: UnboundedReceiver<Event>,
    /// What operations asked of the publisher.
    pub publish: UnboundedReceiver<PublishRequest>,
    _dir: tempfile::TempDir,
}

impl Tester {
    pub async fn new() -> Tester {
        Tester::with_config(FARM).await
    }

    pub async fn with_config(text: &str) -> Tester {
        Tester::with_files(text, &[]).await
    }

    /// A master whose config directory also holds `files` (name, content),
    /// written before the config is loaded (keys it names, say).
    pub async fn with_files(text: &str, files: &[(&str, &str)]) -> Tester {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("config file");
        }
        let farm = LoadedFarm::from_text(&dir.path().join("farm.toml"), text.to_string()).expect("config");
        let data_dir = farm.data_dir();
        std::fs::create_dir_all(&data_dir).expect("data dir");
        // A file, not `:memory:`: the writer and the reader pool must see one database.
        let store = kiln_db::Store::open(&farm.database_url()).await.expect("store");
        let logs = LogStore::new(&data_dir).expect("logs");
        let artifacts = ArtifactStore::new(&data_dir, "test", 1 << 20).expect("artifacts");
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (publish_tx, publish) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(
            store,
            logs,
            artifacts,
            farm,
            "admin-token".into(),
            events_tx,
            publish_tx,
            Default::default(),
        ));
        Tester { shared, events, publish, _dir: dir }
    }

    /// The next thing the dispatcher was told, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// A user with the given permissions.
pub fn user(name: &str, perms: &[Permission]) -> Caller {
    Caller { name: name.into(), perms: perms.iter().copied().collect::<Permissions>() }
}
