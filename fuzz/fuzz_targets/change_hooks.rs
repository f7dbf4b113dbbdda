//! Push payloads from GitHub/Gitea and GitLab, and what they concern.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for parsed in [kiln_core::change::parse_github_push(data), kiln_core::change::parse_gitlab_push(data)] {
        if let Ok(Some(change)) = parsed {
            for url in &change.urls {
                let _ = kiln_core::change::normalize_url(url);
            }
        }
    }
});
