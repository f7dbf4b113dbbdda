//! Config reload without a restart: on SIGHUP, and when the config file's
//! content changes. A config with errors is refused (its errors logged) and
//! the running one stays; workers and running builds are never dropped.

use crate::events::Event;
use crate::farm::LoadedFarm;
use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

pub async fn watch(shared: Arc<Shared>) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload on file change only");
            None
        }
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    // The last text looked at, so a broken file is reported once, not every tick.
    let mut last_text = shared.farm().text.clone();
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let current = shared.farm();
        let text = match tokio::fs::read_to_string(&current.path).await {
            Ok(t) => t,
            Err(e) => {
                if forced {
                    tracing::error!(path = %current.path.display(), error = %e, "config reload refused: cannot read the config");
                }
                continue;
            }
        };
        if !forced && text == last_text {
            continue;
        }
        last_text = text.clone();
        if forced {
            // The service manager shows the reload (a `Type=notify-reload`
            // unit, systemd 253 and later, also waits for READY).
            crate::service_manager::notify("RELOADING=1");
        }
        reload(&shared, &current, text);
        if forced {
            crate::service_manager::notify("READY=1");
        }
    }
}

fn reload(shared: &Shared, current: &LoadedFarm, text: String) {
    match LoadedFarm::from_text(&current.path, text) {
        Ok(new) => {
            let (old_m, new_m) = (&current.cfg.master, &new.cfg.master);
            if old_m.listen != new_m.listen
                || old_m.worker_listen != new_m.worker_listen
                || old_m.data_dir != new_m.data_dir
                || old_m.database != new_m.database
                || old_m.worker_tls != new_m.worker_tls
            {
                tracing::warn!("listen addresses, data_dir, database and TLS files take effect at the next restart");
            }
            shared.replace_farm(new);
            tracing::info!(generation = shared.generation(), "config reloaded");
            shared.send(Event::ConfigChanged);
        }
        Err(e) => {
            tracing::error!("config reload refused; the running config stays in effect:\n{e}")
        }
    }
}
