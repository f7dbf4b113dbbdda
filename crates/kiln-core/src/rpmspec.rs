//! RPM spec details: the nightly release scheme. A nightly build of release
//! `1%{?dist}` becomes `1~nightly20261122.17%{?dist}`: `~` sorts below
//! anything in RPM (4.10 and later), so a nightly sorts below its release.

/// The nightly form of a `Release:` value.
pub fn nightly_release(release: &str, date: &str, build_id: i64) -> String {
    let tag = format!("~nightly{date}.{build_id}");
    match release.find('%') {
        Some(i) => format!("{}{tag}{}", &release[..i], &release[i..]),
        None => format!("{release}{tag}"),
    }
}

/// Rewrites the first `Release:` line of a spec with `f(old value)`.
pub fn rewrite_release(spec: &str, f: impl Fn(&str) -> String) -> Result<String, String> {
    let mut out = String::with_capacity(spec.len() + 32);
    let mut done = false;
    for line in spec.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if !done && trimmed.len() >= 8 && trimmed[..8].eq_ignore_ascii_case("release:") {
            let value = trimmed[8..].trim();
            let ending = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("Release:        {}{ending}", f(value)));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if done {
        Ok(out)
    } else {
        Err("the spec has no Release: line".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_releases() {
        assert_eq!(nightly_release("1%{?dist}", "20261122", 17), "1~nightly20261122.17%{?dist}");
        assert_eq!(nightly_release("3", "20261122", 2), "3~nightly20261122.2");
        let spec = "Name: x\nVersion: 1.0\nrelease:   2%{?dist}\nSummary: y\n";
        let out = rewrite_release(spec, |r| nightly_release(r, "20261122", 5)).expect("rewrite");
        assert_eq!(out, "Name: x\nVersion: 1.0\nRelease:        2~nightly20261122.5%{?dist}\nSummary: y\n");
        assert!(rewrite_release("Name: x\n", |r| r.to_string()).is_err());
    }
}
