//! Whether this master is alive and ready to serve, for load balancers
//! and service managers (`/healthz`, `/readyz`): ready means the database
//! answers, the data dir takes a file, every channel's key is loaded, and
//! (masters sharing a database) this master holds its lease.

use crate::shared::Shared;

/// One readiness check: its name, and what is wrong (none: it passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub problem: Option<String>,
}

/// Runs every readiness check.
pub async fn readiness(s: &Shared) -> Vec<Check> {
    let database = s.store.schema_version().await.err().map(|e| e.to_string());
    let farm = s.farm();
    let data_dir = writable(&farm.data_dir()).err();
    let missing: Vec<&str> =
        farm.cfg.channels.iter().map(|c| c.name.as_str()).filter(|c| s.channel_key(c).is_none()).collect();
    let keys = (!missing.is_empty()).then(|| format!("no key loaded for channel(s) {}", missing.join(", ")));
    let lease = (!s.lease_held()).then(|| "this master cannot renew its lease".to_string());
    vec![
        Check { name: "database", problem: database },
        Check { name: "data_dir", problem: data_dir },
        Check { name: "keys", problem: keys },
        Check { name: "lease", problem: lease },
    ]
}

/// Whether a file can be written (and synced) in `dir`.
fn writable(dir: &std::path::Path) -> Result<(), String> {
    let probe = dir.join(format!(".ready.{}", std::process::id()));
    let written = kiln_repo::fsio::write_atomic_mode(&probe, b"ready\n", 0o600);
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::Tester;

    fn failing(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| c.problem.is_some()).map(|c| c.name).collect()
    }

    #[tokio::test]
    async fn a_master_is_ready_only_with_its_database_data_dir_keys_and_lease() {
        // The test master loads no channel keys: its two channels have none.
        let t = Tester::new().await;
        let checks = readiness(&t.shared).await;
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names, ["database", "data_dir", "keys", "lease"]);
        assert_eq!(failing(&checks), ["keys"], "{checks:?}");
        assert_eq!(checks[2].problem.as_deref(), Some("no key loaded for channel(s) dev, stable"));
        t.shared.set_lease_held(false);
        assert_eq!(failing(&readiness(&t.shared).await), ["keys", "lease"]);
        t.shared.set_lease_held(true);
        t.shared.store.close().await;
        assert_eq!(failing(&readiness(&t.shared).await), ["database", "keys"]);
    }
}
