//! RPM package headers read by kiln's own reader, `inspect_rpm`, which makes
//! the `RpmEntry` (and its primary, filelists and other XML) of an uploaded
//! package. The twin of `rpm_headers`, measured the same way. `inspect_rpm`
//! reads a file, so each input is written to a scratch file first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("kiln-fuzz-rpm-{}.rpm", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let sha256 = "0".repeat(64);
    if let Ok(entry) = kiln_repo::yum::inspect_rpm(path, "Packages/f/fuzz.rpm", &sha256, data.len() as u64, 0) {
        let _ = entry.nevra();
    }
});
