//! RPM package headers read through the `rpm` crate behind kiln's guard, as the
//! master does when it signs a build's package: only what `check_rpm` (kiln's
//! own reader) finds well formed reaches the crate, which then reads the lead,
//! both headers and every field an `RpmEntry` is made from (NEVRA, texts,
//! sizes, files, dependency lists, changelogs, the main header's byte range).
//! Without the guard the crate panicked within a second (offsets past a
//! header's data, sizes that overflow) or allocated by claimed counts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rpm::{IndexSignatureTag, IndexTag};
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("kiln-fuzz-rpm-guard-{}.rpm", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() || kiln_repo::yum::check_rpm(path).is_err() {
        return;
    }
    let Ok(meta) = rpm::PackageMetadata::parse(&mut &data[..]) else { return };
    let _ = meta.get_package_segment_offsets();
    let _ = meta.is_source_package();
    let _ = (meta.get_name(), meta.get_epoch(), meta.get_version(), meta.get_release(), meta.get_arch());
    let _ = meta.get_nevra().map(|n| n.to_string());
    let _ = (meta.get_summary(), meta.get_description(), meta.get_packager(), meta.get_url(), meta.get_vcs());
    let _ = (meta.get_license(), meta.get_vendor(), meta.get_group(), meta.get_build_host(), meta.get_source_rpm());
    let _ = (meta.get_build_time(), meta.get_installed_size());
    let h = &meta.header;
    let _ = h.entry_is_present(IndexTag::RPMTAG_SOURCEPACKAGE);
    let _ = h.get_entry_data_as_u64(IndexTag::RPMTAG_LONGARCHIVESIZE);
    let _ = h.get_entry_data_as_u32(IndexTag::RPMTAG_ARCHIVESIZE);
    let _ = h.get_entry_data_as_u32(IndexTag::RPMTAG_PAYLOADSIZEALT);
    let _ = meta.signature.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE);
    let _ = meta.signature.get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE);
    // Files: modes and flags (directory / ghost), full paths, old-style file names.
    let _ = h.get_entry_data_as_u16_array(IndexTag::RPMTAG_FILEMODES);
    let _ = h.get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEFLAGS);
    let _ = h.get_entry_data_as_string_array(IndexTag::RPMTAG_OLDFILENAMES);
    let _ = meta.get_file_paths();
    if let Ok(files) = meta.get_file_entries() {
        for f in &files {
            let _ = (f.path(), f.mode(), f.flags(), f.file_type());
        }
    }
    for deps in [
        meta.get_provides(),
        meta.get_requires(),
        meta.get_conflicts(),
        meta.get_obsoletes(),
        meta.get_suggests(),
        meta.get_enhances(),
        meta.get_recommends(),
        meta.get_supplements(),
    ] {
        for d in deps.iter().flatten() {
            let _ = (d.name.len(), d.flags.bits(), d.version.len());
        }
    }
    let _ = meta.get_changelog_entries();
});
