//! deb822 paragraphs and source uploads (.dsc / .changes, clear-signed or not).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = kiln_core::deb822::parse_paragraph(&text);
    let _ = kiln_core::deb822::parse_source_upload(&text);
});
