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
        // `get`, not indexing: a line may start with multi-byte characters.
        let value = trimmed.get(..8).filter(|tag| tag.eq_ignore_ascii_case("release:")).and_then(|_| trimmed.get(8..));
        if let Some(value) = value.filter(|_| !done) {
            let value = value.trim();
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

/// The file names of a parsed spec's `Source`/`SourceN` and
/// `Patch`/`PatchN` tags (a URL's last part: rpmbuild looks for that name
/// in the source dir).
pub fn source_files(parsed_spec: &str) -> Vec<String> {
    parsed_spec
        .lines()
        .filter_map(|line| {
            let (tag, value) = line.split_once(':')?;
            let tag = tag.trim();
            let numbered = |word: &str| {
                tag.get(..word.len()).is_some_and(|t| t.eq_ignore_ascii_case(word))
                    && tag.get(word.len()..).is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            };
            let value = value.trim();
            let name = value.rsplit('/').next().unwrap_or(value);
            ((numbered("source") || numbered("patch")) && !name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Whether a source file name is a tarball kiln can make from the tree.
pub fn is_tarball(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst"].iter().any(|s| name.ends_with(s))
        && !name.contains(['/', '\\'])
        && !name.starts_with('.')
}

/// The directory `%setup -n DIR` / `%autosetup -n DIR` names, if any.
pub fn setup_dir(parsed_spec: &str) -> Option<String> {
    parsed_spec.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        if first != "%setup" && first != "%autosetup" {
            return None;
        }
        let mut words = words.peekable();
        while let Some(w) = words.next() {
            if w == "-n" {
                return words.next().map(str::to_string);
            }
            if let Some(d) = w.strip_prefix("-n") {
                return Some(d.to_string());
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_the_setup_dir_are_read_from_a_parsed_spec() {
        let spec = "Name: x\nSource0: https://example.org/dl/x-1.0.tar.gz\nsource1:  extra.conf\nSourceX: no\n\
                    Patch0: fix.patch\nPatches: no\n%prep\n%autosetup -p1 -n x-src\n";
        assert_eq!(source_files(spec), ["x-1.0.tar.gz", "extra.conf", "fix.patch"]);
        assert!(is_tarball("x-1.0.tar.gz") && is_tarball("y.tgz") && !is_tarball("extra.patch"));
        assert!(!is_tarball(".hidden.tar"));
        assert_eq!(setup_dir(spec).as_deref(), Some("x-src"));
        assert_eq!(setup_dir("%setup -q\n"), None);
    }

    #[test]
    fn lines_starting_with_multibyte_characters_are_no_tags() {
        // Found by the fuzzer: slicing at byte 8 or 6 inside a character panicked.
        let spec = "\u{3bc}\u{a888}x:y\nSourc\u{e9}\u{e9}: z\nRelease: 1\n";
        assert_eq!(
            rewrite_release(spec, |r| format!("{r}.1")).as_deref(),
            Ok("\u{3bc}\u{a888}x:y\nSourc\u{e9}\u{e9}: z\nRelease:        1.1\n")
        );
        assert!(source_files(spec).is_empty());
        assert!(rewrite_release("\u{3bc}\u{a888}", |r| r.to_string()).is_err());
    }

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
