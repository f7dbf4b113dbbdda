//! Hiding secret values in build output. Output arrives in pieces, so a
//! secret may be split across two of them: the [`Redactor`] holds back a
//! tail that could be the start of a secret until the next piece (or the
//! end) shows whether it is one.

/// What replaces a secret in logs.
pub const MASK: &str = "***";

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<Vec<u8>>,
}

impl Redactor {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut secrets: Vec<Vec<u8>> =
            values.into_iter().filter(|v| !v.is_empty()).map(|v| v.as_bytes().to_vec()).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Masks every secret in `buf`. Unless `last`, stops before a tail
    /// that could be the start of a secret. Returns the masked bytes and
    /// how many bytes of `buf` they stand for (the rest is to be offered
    /// again with what follows).
    pub fn split(&self, buf: &[u8], last: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'scan: while i < buf.len() {
            let rest = &buf[i..];
            for s in &self.secrets {
                if rest.starts_with(s) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += s.len();
                    continue 'scan;
                }
            }
            if !last && self.secrets.iter().any(|s| s.len() > rest.len() && s.starts_with(rest)) {
                break;
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, i)
    }

    /// `text` with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.split(text.as_bytes(), true).0).into_owned()
    }
}

/// `url` with any credentials in it (`https://user:token@host/...`)
/// replaced by `***`, for logs and messages: a git URL may carry a token.
pub fn url_for_logs(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// A request target (`/path?query`) for logs: the path only, as a query
/// may carry a token.
pub fn target_for_logs(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?…"),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_queries_stay_out_of_logs() {
        assert_eq!(
            url_for_logs("https://ann:ghp_s3cret@git.example.org/grace.git"),
            "https://***@git.example.org/grace.git"
        );
        assert_eq!(url_for_logs("https://git.example.org/a@b.git"), "https://git.example.org/a@b.git");
        assert_eq!(url_for_logs("git@github.com:grace/mono.git"), "git@github.com:grace/mono.git");
        assert_eq!(url_for_logs("/srv/git/grace"), "/srv/git/grace");
        assert_eq!(target_for_logs("/api/v1/builds", Some("token=kiln_1_x")), "/api/v1/builds?…");
        assert_eq!(target_for_logs("/", None), "/");
    }

    #[test]
    fn secrets_are_masked_also_when_split_across_pieces() {
        let r = Redactor::new(["hunter2", "hunter2-long", ""]);
        assert_eq!(r.redact("pw=hunter2 and hunter2-long."), "pw=*** and ***.");
        // Fed in pieces: the tail "hun" is held back until it is known.
        let (out, used) = r.split(b"token: hun", false);
        assert_eq!((out.as_slice(), used), (&b"token: "[..], 7));
        let mut pending = b"token: hun"[used..].to_vec();
        pending.extend_from_slice(b"ter2\n");
        let (out, used) = r.split(&pending, false);
        assert_eq!((out.as_slice(), used), (&b"***\n"[..], pending.len()));
        // A tail that turns out not to be a secret is sent as it was.
        assert_eq!(r.split(b"hunt", true), (b"hunt".to_vec(), 4));
        assert_eq!(Redactor::new([]).redact("x"), "x");
    }
}
