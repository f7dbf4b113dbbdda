//! Repository URLs compared by what they name: a forge gives one
//! repository as a clone URL, an SSH URL in `user@host:path` form, a web
//! page and older fields besides, and a component's config names it in
//! any one of those forms.

/// A repository URL reduced to host and path, lower case, without scheme,
/// user, password, port, `.git` or trailing slash: `https://host/o/r.git`,
/// `git@host:o/r.git`, `ssh://git@host:2222/o/r` and `git://host/o/r/`
/// all become `host/o/r`. (A forge serves SSH and HTTPS on different ports
/// of one host, so the port says nothing about which repository it is.)
/// A local path stays a path.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim();
    let (host, path) = match u.find("://") {
        Some(i) => {
            let rest = &u[i + 3..];
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            (host_of(authority), path)
        }
        // `user@host:path`, as git reads it: a colon before any slash.
        None => match u.split_once(':') {
            Some((authority, path)) if !authority.contains('/') && !authority.is_empty() => (host_of(authority), path),
            _ => ("", u),
        },
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_matches('/');
    if host.is_empty() {
        format!("/{path}").to_ascii_lowercase()
    } else {
        format!("{host}/{path}").to_ascii_lowercase()
    }
}

/// The host of `user:password@host:port`.
fn host_of(authority: &str) -> &str {
    let after_user = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // An IPv6 literal keeps its colons inside the brackets.
    if let Some(end) = after_user.find(']') {
        return &after_user[..=end];
    }
    after_user.split(':').next().unwrap_or(after_user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_a_forge_gives_of_one_repository_is_the_same() {
        let forms = [
            "https://github.com/Grace/mono.git",
            "https://github.com/grace/mono",
            "https://github.com/grace/mono/",
            "http://github.com/grace/mono.git/",
            "git@github.com:grace/mono.git",
            "ssh://git@github.com/grace/mono.git",
            "ssh://git@github.com:22/grace/mono",
            "git://github.com/grace/mono.git",
            "https://oauth2:s3cret@github.com/grace/mono.git",
        ];
        for f in forms {
            assert_eq!(normalize_url(f), "github.com/grace/mono", "{f}");
        }
        assert_ne!(normalize_url("https://github.com/grace/other"), normalize_url(forms[0]));
        assert_ne!(normalize_url("https://gitlab.com/grace/mono"), normalize_url(forms[0]));
        assert_eq!(normalize_url("git://127.0.0.1:9418/mono.git"), "127.0.0.1/mono");
        assert_eq!(normalize_url("ssh://git@[::1]:2222/o/r.git"), "[::1]/o/r");
        assert_eq!(normalize_url("/srv/git/mono.git"), "/srv/git/mono");
        assert_eq!(normalize_url("file:///srv/git/mono.git"), "/srv/git/mono");
    }
}
