//! Changes: what a push did to a repository branch, as a forge's hook
//! payload or the poller tells it, and which components it concerns.
//!
//! The parsers take the body as the forge sent it and return either a
//! [`Change`], nothing (an event that starts no build: a tag, a deleted
//! branch), or an error naming what is wrong with the payload.

use crate::config::{check_branch, check_revision, Component, Source, VcsSource};
use serde_json::Value;

/// A push to one branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Every URL the sender gave for the repository (clone, ssh, web).
    pub urls: Vec<String>,
    pub branch: String,
    /// The pushed commit (full id).
    pub revision: String,
    /// Files the pushed commits touched, when the sender listed them all.
    pub files: Option<Vec<String>>,
    /// Who pushed, as `Name <email>` when the email is known.
    pub who: Option<String>,
    /// The head commit's subject line.
    pub comments: String,
    /// `owner/name` on the forge (for commit statuses).
    pub project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("the payload has no {0}")]
    Missing(&'static str),
    #[error("the payload's {0} is not valid: {1}")]
    Invalid(&'static str, String),
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn who(name: Option<&str>, email: Option<&str>) -> Option<String> {
    let clean = |s: &str| s.chars().filter(|c| !c.is_control() && !"<>".contains(*c)).take(200).collect::<String>();
    match (name.map(clean).filter(|n| !n.is_empty()), email.map(clean).filter(|e| e.contains('@'))) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (Some(n), None) => Some(n),
        (None, Some(e)) => Some(format!("<{e}>")),
        (None, None) => None,
    }
}

/// The branch of `refs/heads/NAME`; `None` for tags and other refs.
fn branch_of(r: &str) -> Option<&str> {
    r.strip_prefix("refs/heads/")
}

fn subject(message: Option<&str>) -> String {
    message.unwrap_or("").lines().next().unwrap_or("").chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The files a push payload's commit list touched, unless the list is cut
/// short (forges send at most 20 commits) — then nobody knows.
fn files_of(commits: &[Value], total: Option<u64>) -> Option<Vec<String>> {
    if total.is_some_and(|t| t > commits.len() as u64) || commits.len() >= 20 {
        return None;
    }
    let mut files: Vec<String> = Vec::new();
    for c in commits {
        for key in ["added", "modified", "removed"] {
            for f in c.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Some(f) = f.as_str() {
                    files.push(f.to_string());
                }
            }
        }
    }
    files.sort();
    files.dedup();
    Some(files)
}

/// The branch, the pushed commit and the touched files of a push.
type Pushed = (String, String, Option<Vec<String>>);

fn common(v: &Value, urls: Vec<String>, total: Option<u64>) -> Result<Option<Pushed>, PayloadError> {
    let r = text(v, &["ref"]).ok_or(PayloadError::Missing("ref"))?;
    let Some(branch) = branch_of(r) else { return Ok(None) };
    check_branch(branch).map_err(|e| PayloadError::Invalid("ref", e))?;
    let after = text(v, &["after"]).ok_or(PayloadError::Missing("after"))?;
    if after.chars().all(|c| c == '0') {
        return Ok(None); // the branch was deleted
    }
    check_revision(after).map_err(|e| PayloadError::Invalid("after", e))?;
    if urls.is_empty() {
        return Err(PayloadError::Missing("repository URL"));
    }
    let commits: Vec<Value> = v.get("commits").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(Some((branch.to_string(), after.to_string(), files_of(&commits, total))))
}

fn json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))
}

fn urls(v: &Value, keys: &[&[&str]]) -> Vec<String> {
    keys.iter().filter_map(|k| text(v, k)).filter(|u| !u.is_empty()).map(str::to_string).collect()
}

/// GitHub's (and Gitea's and Forgejo's, which copy it) `push` event.
pub fn parse_github_push(body: &[u8]) -> Result<Option<Change>, PayloadError> {
    let v = json(body)?;
    let u = urls(
        &v,
        &[
            &["repository", "clone_url"],
            &["repository", "ssh_url"],
            &["repository", "html_url"],
            &["repository", "git_url"],
        ],
    );
    let total = v.get("total_commits").and_then(Value::as_u64);
    let Some((branch, revision, files)) = common(&v, u.clone(), total)? else { return Ok(None) };
    let pusher =
        who(text(&v, &["pusher", "name"]).or_else(|| text(&v, &["pusher", "login"])), text(&v, &["pusher", "email"]));
    Ok(Some(Change {
        urls: u,
        branch,
        revision,
        files,
        who: pusher,
        comments: subject(text(&v, &["head_commit", "message"])),
        project: text(&v, &["repository", "full_name"]).map(str::to_string),
    }))
}

/// GitLab's `Push Hook`.
pub fn parse_gitlab_push(body: &[u8]) -> Result<Option<Change>, PayloadError> {
    let v = json(body)?;
    if text(&v, &["object_kind"]).is_some_and(|k| k != "push") {
        return Ok(None);
    }
    let u = urls(
        &v,
        &[
            &["project", "git_http_url"],
            &["project", "git_ssh_url"],
            &["project", "web_url"],
            &["repository", "git_http_url"],
            &["repository", "git_ssh_url"],
            &["repository", "homepage"],
        ],
    );
    let total = v.get("total_commits_count").and_then(Value::as_u64);
    let Some((branch, revision, files)) = common(&v, u.clone(), total)? else { return Ok(None) };
    let head = v
        .get("commits")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| text(c, &["id"]) == Some(revision.as_str())));
    Ok(Some(Change {
        urls: u,
        branch,
        revision,
        files,
        who: who(text(&v, &["user_name"]), text(&v, &["user_email"])),
        comments: subject(head.and_then(|c| text(c, &["message"]))),
        project: text(&v, &["project", "path_with_namespace"]).map(str::to_string),
    }))
}

/// A repository URL reduced to what identifies it: no scheme case, no
/// trailing slash or `.git`.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    u.to_ascii_lowercase()
}

impl Change {
    /// Whether this change is a push to `git`'s repository and branch that
    /// touches files the source cares about.
    pub fn concerns(&self, git: &VcsSource) -> bool {
        let mine = normalize_url(&git.url);
        if self.branch != git.branch || !self.urls.iter().any(|u| normalize_url(u) == mine) {
            return false;
        }
        let Some(files) = &self.files else { return true };
        if !git.paths.is_empty() {
            return files.iter().any(|f| git.paths.iter().any(|p| p.matches(f)));
        }
        match &git.subdir {
            Some(dir) => files.iter().any(|f| f.strip_prefix(dir.as_str()).is_some_and(|rest| rest.starts_with('/'))),
            None => true,
        }
    }

    /// The components (in config order) this change concerns.
    pub fn components<'a>(&self, components: &'a [Component]) -> Vec<&'a Component> {
        components
            .iter()
            .filter(|c| match &c.source {
                Some(Source::Vcs(g)) => self.concerns(g),
                _ => false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const GITHUB_PUSH: &str = r#"{
      "ref": "refs/heads/main",
      "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "repository": {"full_name": "grace/mono", "html_url": "https://github.com/grace/mono",
        "clone_url": "https://github.com/grace/mono.git", "ssh_url": "git@github.com:grace/mono.git"},
      "pusher": {"name": "grace", "email": "grace@example.org"},
      "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "libgrace: fix the build\n\nlong text"},
      "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "added": [], "removed": [],
        "modified": ["libgrace/src/grace.c"]}]
    }"#;

    fn farm() -> crate::config::FarmConfig {
        parse(
            r#"
[[component]]
name = "libgrace"
source = { git = "https://github.com/grace/mono", branch = "main", subdir = "libgrace" }
[[component]]
name = "grace-tools"
source = { git = "git@github.com:grace/mono.git", subdir = "tools" }
[[component]]
name = "docs"
source = { git = "https://github.com/grace/mono.git", paths = ["**/*.md"] }
[[component]]
name = "other"
source = { git = "https://github.com/grace/other.git" }
"#,
        )
        .expect("config")
    }

    #[test]
    fn a_github_push_builds_the_components_whose_files_it_touched() {
        let change = parse_github_push(GITHUB_PUSH.as_bytes()).expect("parses").expect("a push to a branch");
        assert_eq!(change.branch, "main");
        assert_eq!(change.revision, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
        assert_eq!(change.who.as_deref(), Some("grace <grace@example.org>"));
        assert_eq!(change.comments, "libgrace: fix the build");
        assert_eq!(change.project.as_deref(), Some("grace/mono"));
        let cfg = farm();
        let names: Vec<&str> = change.components(&cfg.components).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["libgrace"]);
    }

    #[test]
    fn a_push_with_an_unknown_file_list_concerns_every_component_of_the_branch() {
        let mut v: Value = serde_json::from_str(GITHUB_PUSH).expect("json");
        let commit = v["commits"][0].clone();
        v["commits"] = Value::Array(vec![commit; 20]);
        let change = parse_github_push(v.to_string().as_bytes()).expect("parses").expect("push");
        assert_eq!(change.files, None);
        let cfg = farm();
        assert_eq!(change.components(&cfg.components).len(), 3);
    }

    #[test]
    fn tags_and_deleted_branches_start_nothing_and_bad_payloads_say_why() {
        let tag = GITHUB_PUSH.replace("refs/heads/main", "refs/tags/v1.0");
        assert_eq!(parse_github_push(tag.as_bytes()), Ok(None));
        let deleted = GITHUB_PUSH.replace(
            "\"after\": \"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c\"",
            "\"after\": \"0000000000000000000000000000000000000000\"",
        );
        assert_eq!(parse_github_push(deleted.as_bytes()), Ok(None));
        assert!(matches!(parse_github_push(b"{\"ref\": 1"), Err(PayloadError::NotJson(_))));
        assert_eq!(parse_github_push(b"{}"), Err(PayloadError::Missing("ref")));
        let evil = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/--upload-pack=x");
        assert!(matches!(parse_github_push(evil.as_bytes()), Err(PayloadError::Invalid("ref", _))));
        let evil = GITHUB_PUSH.replace(
            "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c\",\n      \"repository",
            "HEAD~1\",\n      \"repository",
        );
        assert!(matches!(parse_github_push(evil.as_bytes()), Err(PayloadError::Invalid("after", _))));
    }

    #[test]
    fn gitlab_payloads() {
        let gl = r#"{"object_kind": "push", "ref": "refs/heads/main", "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
          "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "user_name": "Jo", "user_email": "jo@example.org",
          "total_commits_count": 1,
          "project": {"path_with_namespace": "grace/mono", "git_http_url": "https://github.com/grace/mono.git",
            "git_ssh_url": "git@github.com:grace/mono.git", "web_url": "https://github.com/grace/mono"},
          "commits": [{"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "tools: new flag",
            "added": ["tools/flag.c"], "modified": [], "removed": []}]}"#;
        let change = parse_gitlab_push(gl.as_bytes()).expect("parses").expect("push");
        assert_eq!(change.comments, "tools: new flag");
        let cfg = farm();
        let names: Vec<&str> = change.components(&cfg.components).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["grace-tools"]);
    }
}
