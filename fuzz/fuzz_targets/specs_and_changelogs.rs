//! RPM specs (release rewriting, sources, %setup) and Debian changelogs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = kiln_core::rpmspec::rewrite_release(&text, |r| kiln_core::rpmspec::nightly_release(r, "20261122", 7));
    for f in kiln_core::rpmspec::source_files(&text) {
        let _ = kiln_core::rpmspec::is_tarball(&f);
    }
    let _ = kiln_core::rpmspec::setup_dir(&text);
    if let Ok(head) = kiln_core::debian::changelog_head(&text) {
        let v = kiln_core::debian::nightly_version(&head.version, "20261122", 7);
        let _ = kiln_core::debian::changelog_entry(&head, &v, "fuzz", "f <f@example.org>", "now");
    }
});
