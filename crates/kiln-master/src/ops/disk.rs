//! How full the data dir's file system is: shown by `/api/v1/status`, the
//! web's status line and `/metrics`, and warned about past
//! `[retention] disk_warn`.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUse {
    /// Size of the file system.
    pub total: u64,
    /// Bytes an unprivileged process may still write.
    pub free: u64,
}

impl DiskUse {
    /// Percent used, as `df` counts it (what is not free to kiln).
    pub fn used_percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        100.0 * (self.total.saturating_sub(self.free)) as f64 / self.total as f64
    }
}

/// The data dir's file system as `/api/v1/status` and the web show it,
/// with a warning past `[retention] disk_warn` (none: it cannot be read).
pub fn status(s: &crate::shared::Shared) -> Option<kiln_proto::api::DiskStatus> {
    let farm = s.farm();
    let u = usage(&farm.data_dir()).ok()?;
    let used = u.used_percent().ceil() as u32;
    let limit = u32::from(farm.cfg.retention.disk_warn_percent);
    let warning = (used >= limit).then(|| {
        format!(
            "the data dir's file system is {used}% full ({} free); `kiln gc` frees old logs and artifacts, \
             [retention] says how long they are kept",
            kiln_core::size::format_bytes(u.free)
        )
    });
    Some(kiln_proto::api::DiskStatus { total_bytes: u.total, free_bytes: u.free, used_percent: used, warning })
}

/// The file system holding `dir`.
pub fn usage(dir: &Path) -> std::io::Result<DiskUse> {
    let st = rustix::fs::statvfs(dir)?;
    let unit = st.f_frsize;
    Ok(DiskUse { total: st.f_blocks.saturating_mul(unit), free: st.f_bavail.saturating_mul(unit) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_a_file_system_with_room_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().expect("test set-up");
        let u = usage(dir.path()).expect("test set-up");
        assert!(u.total > 0 && u.free <= u.total, "{u:?}");
        assert!((0.0..=100.0).contains(&u.used_percent()));
        assert!(usage(&dir.path().join("missing")).is_err());
    }
}
