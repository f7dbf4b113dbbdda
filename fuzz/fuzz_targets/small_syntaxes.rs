//! The small syntaxes users type: durations, sizes, cron expressions, property assignments and
//! interpolation, permissions, emails, artifact names.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = kiln_core::duration::parse_duration(&text);
    let _ = kiln_core::size::parse_size(&text);
    if let Ok(c) = kiln_core::cron::CronSpec::parse(&text) {
        let _ = c.matches(0, 0, 1, 1, 0);
    }
    let _ = kiln_core::props::parse_assignment(&text);
    let _ = kiln_core::props::interpolate(&text, |k| (k.len() % 2 == 0).then(|| k.to_string()));
    let _ = kiln_core::perm::Permissions::parse(&text);
    let _ = kiln_core::perm::check_email(&text);
    let _ = kiln_core::names::valid_artifact_name(&text);
    let _ = kiln_core::names::check_property_name(&text);
});
