//! State shared by the operations, the HTTP handlers, the worker
//! connections and the tasks. It imports only leaves (events, callers, the
//! stores, the loaded config), so anything may hold it.

use crate::artifacts::ArtifactStore;
use crate::caller::{Session, TokenCache};
use crate::events::{Event, PublishRequest, Say};
use crate::farm::LoadedFarm;
use crate::logs::LogStore;
use kiln_db::Store;
use kiln_proto::api::WorkerInfo;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc::UnboundedSender;

/// Browser sessions end after this long.
pub const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

pub struct Shared {
    pub store: Store,
    pub logs: LogStore,
    pub artifacts: ArtifactStore,
    farm: RwLock<Arc<LoadedFarm>>,
    generation: AtomicU64,
    pub admin_token: String,
    /// What `/api/v1/workers` shows; written by the dispatcher only.
    pub workers: Mutex<BTreeMap<String, WorkerInfo>>,
    pub events: UnboundedSender<Event>,
    /// The one queue of repository changes.
    pub publisher: UnboundedSender<PublishRequest>,
    /// Each channel's public keys as its publisher last loaded them.
    channel_keys: RwLock<HashMap<String, Arc<ChannelPublicKey>>>,
    /// Bumped whenever builds, workers or repositories change; live pages follow it.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// The builders' last results, as of a `changes` value (the console and
    /// builders pages read it on every render).
    pub builder_stats: Mutex<Option<(u64, Arc<Vec<kiln_db::BuilderStats>>)>>,
    /// The queue in dispatch order and why each build waits, as the
    /// dispatcher last saw it.
    pub waiting: Mutex<Arc<WaitingQueue>>,
    /// Users' tokens checked lately (by hash), to spare an argon2 check per request.
    pub checked_tokens: TokenCache,
    /// Failed token checks by address and token id.
    pub auth_failures: crate::caller::Throttle,
    /// Web sessions (cookie value to session).
    pub sessions: Mutex<HashMap<String, Session>>,
    /// Lines for the IRC bot, and its end of the queue (taken once, by the bot).
    pub chat: tokio::sync::mpsc::UnboundedSender<Say>,
    pub chat_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Say>>>,
    /// False while this master cannot renew its lease (the database is out
    /// of reach): it takes no workers and starts nothing, so its workers go
    /// on under another master before this one is fenced.
    lease_held: std::sync::atomic::AtomicBool,
    /// What `/metrics` counts as it happens.
    pub metrics: crate::metrics::Metrics,
}

/// What a channel's signers show the world: every public key it signs
/// with (armored, the current one first, as `key.asc` serves them; build
/// roots trust these), and its current key's fingerprint and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPublicKey {
    pub armored: String,
    pub fingerprint: String,
    /// Unix seconds; `None` for a key that does not expire.
    pub expires_at: Option<u64>,
}

impl ChannelPublicKey {
    pub fn of(signers: &kiln_repo::key::Signers) -> Result<Self, kiln_repo::RepoError> {
        Ok(ChannelPublicKey {
            armored: signers.public_armored()?,
            fingerprint: signers.current().fingerprint(),
            expires_at: signers.current().expires_at(),
        })
    }
}

impl Shared {
    /// When channel `name`'s signing key expires (Unix seconds); `None`
    /// when it does not, or the channel has no key loaded.
    pub fn key_expiry(&self, name: &str) -> Option<u64> {
        self.channel_key(name).and_then(|k| k.expires_at)
    }

    /// Channel `name`'s public keys; `None` when none is loaded.
    pub fn channel_key(&self, name: &str) -> Option<Arc<ChannelPublicKey>> {
        self.channel_keys.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Records what channel `name` signs with now (by the publisher, as it
    /// loads keys); true when that changed.
    pub fn set_channel_key(&self, name: &str, key: ChannelPublicKey) -> bool {
        let mut keys = self.channel_keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.get(name).is_some_and(|k| **k == key) {
            return false;
        }
        keys.insert(name.to_string(), Arc::new(key));
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        logs: LogStore,
        artifacts: ArtifactStore,
        farm: LoadedFarm,
        admin_token: String,
        events: UnboundedSender<Event>,
        publisher: UnboundedSender<PublishRequest>,
        channel_keys: HashMap<String, ChannelPublicKey>,
    ) -> Self {
        let (chat, chat_rx) = tokio::sync::mpsc::unbounded_channel();
        Shared {
            chat,
            chat_rx: Mutex::new(Some(chat_rx)),
            store,
            logs,
            artifacts,
            farm: RwLock::new(Arc::new(farm)),
            generation: AtomicU64::new(1),
            admin_token,
            workers: Mutex::new(BTreeMap::new()),
            events,
            publisher,
            channel_keys: RwLock::new(channel_keys.into_iter().map(|(c, k)| (c, Arc::new(k))).collect()),
            changes: tokio::sync::watch::channel(0).0,
            sessions: Mutex::new(HashMap::new()),
            checked_tokens: Default::default(),
            auth_failures: Default::default(),
            builder_stats: Mutex::new(None),
            waiting: Mutex::new(Arc::new(WaitingQueue::default())),
            lease_held: std::sync::atomic::AtomicBool::new(true),
            metrics: Default::default(),
        }
    }

    /// Whether this master holds its lease, as far as it knows.
    pub fn lease_held(&self) -> bool {
        self.lease_held.load(Ordering::SeqCst)
    }

    /// Records whether this master holds its lease; returns what it was.
    pub fn set_lease_held(&self, held: bool) -> bool {
        self.lease_held.swap(held, Ordering::SeqCst)
    }

    /// Why queued build `id` waits (none when the dispatcher has not looked yet).
    pub fn waiting_of(&self, id: i64) -> Option<kiln_core::schedule::Waiting> {
        self.waiting().why.get(&id).cloned()
    }

    /// The queue as the dispatcher last saw it.
    pub fn waiting(&self) -> Arc<WaitingQueue> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The config in effect now. Hold the `Arc`, not the lock.
    pub fn farm(&self) -> Arc<LoadedFarm> {
        self.farm.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace_farm(&self, farm: LoadedFarm) {
        *self.farm.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(farm);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn workers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, WorkerInfo>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every builder's last result and queue, cached until the next change.
    pub async fn builder_stats(&self) -> Arc<Vec<kiln_db::BuilderStats>> {
        let now = *self.changes.borrow();
        if let Some((at, stats)) = self.builder_stats.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if *at == now {
                return stats.clone();
            }
        }
        let stats = Arc::new(self.store.builder_stats().await.unwrap_or_default());
        *self.builder_stats.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, stats.clone()));
        stats
    }

    /// Tells live pages that something changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sends an event to the dispatcher; it only fails while shutting down.
    pub fn send(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    /// The browser session a cookie value names, if it is still live.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, v| v.created.elapsed() < SESSION_TTL);
        sessions.get(id).cloned()
    }
}

/// The queued builds in the order they are offered to free slots, and why
/// each waits.
#[derive(Debug, Default)]
pub struct WaitingQueue {
    pub order: Vec<i64>,
    pub why: HashMap<i64, kiln_core::schedule::Waiting>,
}
