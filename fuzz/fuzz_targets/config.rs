//! The farm config: any text either parses or yields positioned errors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match kiln_core::config::parse(text) {
            Ok(cfg) => {
                // Every builder of a config that parsed can be planned for.
                let _ = kiln_core::matrix::builders(&cfg).count();
            }
            Err(e) => {
                let _ = e.render("fuzz.toml");
            }
        }
    }
});
