//! Changes: what a push or a pull request did to a repository, as a
//! forge's hook payload or the poller tells it, and which components it
//! concerns.
//!
//! The forge parsers ([`parse_github`] for GitHub, Gitea and Forgejo,
//! [`parse_gitlab`]) take the event name and the body as the forge sent
//! them and return a [`ForgeEvent`]: a push, a pull request to build or
//! close, a comment, or the reason the event starts nothing. A payload that
//! is not what the forge sends is an error naming the field.

mod github;
mod gitlab;
mod url;

pub use github::parse_github;
pub use gitlab::parse_gitlab;
pub use url::normalize_url;

use crate::config::{Component, Source, VcsSource};
use serde_json::Value;

/// A push to one branch, or a pull request's head to build against its
/// base branch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    /// Every URL the sender gave for the repository (clone, ssh, web).
    pub urls: Vec<String>,
    /// The pushed branch; a pull request's base branch.
    pub branch: String,
    /// The pushed commit; a pull request's head commit (full id).
    pub revision: String,
    /// Files the change touched, when known (see [`Change::files_unknown`]).
    pub files: Option<Vec<String>>,
    /// Who pushed (or acted on the pull request), as `Name <email>` when
    /// the email is known.
    pub who: Option<String>,
    /// The head commit's author (a pull request's: its opener).
    pub author: Option<String>,
    /// The head commit's subject line; a pull request's title.
    pub comments: String,
    /// The head commit's message (a pull request's title and its last
    /// commit's message), where skip markers are looked for.
    pub message: String,
    /// `owner/name` on the forge (for commit statuses).
    pub project: Option<String>,
    /// The repository's default branch, which a new branch's files are
    /// compared with when the payload does not list them.
    pub default_branch: Option<String>,
    /// The push created the branch.
    pub created: bool,
    /// Set for a pull (merge) request: what is built is a test.
    pub pull: Option<PullRequest>,
}

/// A pull request (GitLab: merge request) as its hook describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Its number (GitLab: the project's `iid`).
    pub number: u64,
    /// The ref the forge keeps its head at in the base repository
    /// (`refs/pull/N/head`, `refs/merge-requests/N/head`), which is where a
    /// fork's commits can be fetched from too.
    pub fetch_ref: String,
    /// The repository its commits come from (a fork's clone URL).
    pub head_repository: String,
    /// The head repository is not the base repository: its code is
    /// nobody's on this farm, and builds without the component's secrets.
    pub fork: bool,
}

/// What a pull request event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullAction {
    /// Opened, reopened or given new commits: test-build its head.
    Build,
    /// Closed or merged: its test builds still waiting are not wanted.
    Close,
}

/// A comment on a pull request, which may ask for a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub urls: Vec<String>,
    pub project: Option<String>,
    /// The pull (merge) request's number.
    pub number: u64,
    pub body: String,
    /// The commenter's login on the forge.
    pub login: String,
    /// The forge says the commenter may change the repository (GitHub's
    /// `author_association`: owner, member or collaborator).
    pub permitted: bool,
}

/// What a forge's delivery means for the farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeEvent {
    Push(Change),
    Pull(Change, PullAction),
    Comment(Comment),
    /// Starts nothing, for this reason.
    Ignored(String),
}

/// The forges whose hooks kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    /// Gitea and Forgejo, which send GitHub's payload shapes.
    Gitea,
    GitLab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }

    /// Where this forge keeps pull request `number`'s head.
    pub fn pull_ref(self, number: u64) -> String {
        match self {
            Forge::GitLab => format!("refs/merge-requests/{number}/head"),
            Forge::GitHub | Forge::Gitea => format!("refs/pull/{number}/head"),
        }
    }
}

/// Checks a ref a build fetches its revision from: only the refs forges
/// keep pull requests at (`refs/pull/N/head`, `refs/merge-requests/N/head`).
pub fn check_fetch_ref(r: &str) -> Result<(), String> {
    let number = r
        .strip_prefix("refs/pull/")
        .or_else(|| r.strip_prefix("refs/merge-requests/"))
        .and_then(|rest| rest.strip_suffix("/head"));
    match number {
        Some(n) if !n.is_empty() && n.len() <= 12 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("{r:?} is not a pull request's ref (refs/pull/N/head or refs/merge-requests/N/head)")),
    }
}

/// The skip markers used when a hook names none.
pub const DEFAULT_SKIP_MARKERS: &[&str] = &["[ci skip]", "[skip ci]"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("the payload has no {0}")]
    Missing(&'static str),
    #[error("the payload's {0} is not valid: {1}")]
    Invalid(&'static str, String),
}

fn json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// The first of `paths` that is a non-empty string.
fn first_text<'a>(v: &'a Value, paths: &[&[&str]]) -> Option<&'a str> {
    paths.iter().filter_map(|p| text(v, p)).find(|s| !s.trim().is_empty())
}

/// Text a forge's user wrote, made safe for a log line and a property.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control() && !"<>".contains(*c)).take(max).collect::<String>().trim().to_string()
}

/// `Name <email>`, or whichever of the two is known.
fn who(name: Option<&str>, email: Option<&str>) -> Option<String> {
    match (
        name.map(|n| clean(n, 200)).filter(|n| !n.is_empty()),
        email.map(|e| clean(e, 200)).filter(|e| e.contains('@')),
    ) {
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

/// A commit id of zeros: the ref did not exist before, or no longer does.
fn is_null_commit(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

/// Longest commit message kept for skip markers.
const MAX_MESSAGE: usize = 4096;

fn message(m: Option<&str>) -> String {
    m.unwrap_or("").chars().take(MAX_MESSAGE).collect()
}

fn subject(message: &str) -> String {
    message.lines().next().unwrap_or("").chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Whether a commit object of a payload lists its files.
fn lists_files(c: &Value) -> bool {
    ["added", "modified", "removed"].iter().any(|k| c.get(k).is_some_and(Value::is_array))
}

/// The files the commits list as added, modified or removed.
fn files_of<'a>(commits: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
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
    files
}

/// Every non-empty URL under `v` at `keys`, without repeats.
fn urls(v: &Value, keys: &[&[&str]]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    add_urls(&mut out, keys.iter().filter_map(|k| text(v, k)).filter(|u| !u.trim().is_empty()).map(str::to_string));
    out
}

/// Appends the URLs of `more` that `into` does not hold yet.
fn add_urls(into: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for u in more {
        if !into.contains(&u) {
            into.push(u);
        }
    }
}

impl Change {
    /// The first of `markers` in the head commit's message (or a pull
    /// request's title), compared without case.
    pub fn skip_marker<'a>(&self, markers: &'a [String]) -> Option<&'a str> {
        let text = self.message.to_lowercase();
        markers.iter().map(String::as_str).find(|m| !m.is_empty() && text.contains(&m.to_lowercase()))
    }

    /// Whether nobody knows which files the change touched, though a
    /// mirror could tell: a new branch or a pull request whose payload
    /// does not list them (compared with `default_branch` or the base).
    pub fn files_unknown(&self) -> bool {
        self.files.is_none() && (self.pull.is_some() || (self.created && self.default_branch.is_some()))
    }

    /// Whether the change is to `git`'s repository and branch, whatever
    /// files it touched.
    pub fn is_to(&self, git: &VcsSource) -> bool {
        let mine = normalize_url(&git.url);
        self.branch == git.branch && self.urls.iter().any(|u| normalize_url(u) == mine)
    }

    /// Whether this change is to `git`'s repository and branch and touches
    /// files the source cares about (any, when the files are unknown).
    pub fn concerns(&self, git: &VcsSource) -> bool {
        if !self.is_to(git) {
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
        components.iter().filter(|c| vcs_source(c).is_some_and(|g| self.concerns(g))).collect()
    }

    /// The git source of the first component whose repository and branch
    /// the change is to (where its files can be learnt from).
    pub fn source_in<'a>(&self, components: &'a [Component]) -> Option<&'a VcsSource> {
        components.iter().filter_map(vcs_source).find(|g| self.is_to(g))
    }
}

fn vcs_source(c: &Component) -> Option<&VcsSource> {
    match &c.source {
        Some(Source::Vcs(g)) => Some(g),
        _ => None,
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

    fn github_push(body: &str) -> Result<Change, PayloadError> {
        match parse_github(Forge::GitHub, "push", body.as_bytes())? {
            ForgeEvent::Push(c) => Ok(c),
            other => panic!("not a push: {other:?}"),
        }
    }

    fn ignored(e: Result<ForgeEvent, PayloadError>) -> bool {
        matches!(e, Ok(ForgeEvent::Ignored(_)))
    }

    #[test]
    fn a_github_push_builds_the_components_whose_files_it_touched() {
        let change = github_push(GITHUB_PUSH).expect("a push to a branch");
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
        // Twenty commits and more are a complete list on GitHub.
        let mut v: Value = serde_json::from_str(GITHUB_PUSH).expect("json");
        let commit = v["commits"][0].clone();
        v["commits"] = Value::Array(vec![commit; 25]);
        let change = github_push(&v.to_string()).expect("push");
        assert_eq!(change.files.as_deref(), Some(&["libgrace/src/grace.c".to_string()][..]));
        // Gitea says when it cut the list.
        v["total_commits"] = Value::from(40);
        let change = github_push(&v.to_string()).expect("push");
        assert_eq!(change.files, None);
        let cfg = farm();
        assert_eq!(change.components(&cfg.components).len(), 3);
    }

    #[test]
    fn tags_and_deleted_branches_start_nothing_and_bad_payloads_say_why() {
        let tag = GITHUB_PUSH.replace("refs/heads/main", "refs/tags/v1.0");
        assert!(ignored(parse_github(Forge::GitHub, "push", tag.as_bytes())));
        let deleted = GITHUB_PUSH.replace(
            "\"after\": \"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c\"",
            "\"after\": \"0000000000000000000000000000000000000000\"",
        );
        assert!(ignored(parse_github(Forge::GitHub, "push", deleted.as_bytes())));
        assert!(matches!(github_push("{\"ref\": 1"), Err(PayloadError::NotJson(_))));
        assert_eq!(github_push("{}"), Err(PayloadError::Missing("ref")));
        let evil = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/--upload-pack=x");
        assert!(matches!(github_push(&evil), Err(PayloadError::Invalid("ref", _))));
        let evil = GITHUB_PUSH.replace(
            "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c\",\n      \"repository",
            "HEAD~1\",\n      \"repository",
        );
        assert!(matches!(github_push(&evil), Err(PayloadError::Invalid("after", _))));
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
        let Ok(ForgeEvent::Push(change)) = parse_gitlab("Push Hook", gl.as_bytes()) else { panic!("a push") };
        assert_eq!(change.comments, "tools: new flag");
        let cfg = farm();
        let names: Vec<&str> = change.components(&cfg.components).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["grace-tools"]);
    }

    #[test]
    fn a_new_branch_without_commits_takes_the_head_commits_files_and_who_is_recorded() {
        let mut v: Value = serde_json::from_str(GITHUB_PUSH).expect("json");
        v["created"] = Value::Bool(true);
        v["before"] = Value::from("0000000000000000000000000000000000000000");
        v["commits"] = Value::Array(Vec::new());
        v["head_commit"]["modified"] = serde_json::json!(["tools/tool.c"]);
        v["head_commit"]["author"] = serde_json::json!({"name": "José Núñez", "email": "jose@example.org"});
        // Buildbot's recorded GitHub payloads carry no pusher: the sender pushed.
        v.as_object_mut().expect("object").remove("pusher");
        v["sender"] = serde_json::json!({"login": "octocat"});
        let change = github_push(&v.to_string()).expect("push");
        assert!(change.created);
        assert_eq!(change.files.as_deref(), Some(&["tools/tool.c".to_string()][..]));
        assert_eq!(change.who.as_deref(), Some("octocat"));
        assert_eq!(change.author.as_deref(), Some("José Núñez <jose@example.org>"));
        let names: Vec<String> = change.components(&farm().components).iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["grace-tools"]);
        // Without file lists anywhere, a mirror must tell (against the default branch).
        v["head_commit"].as_object_mut().expect("object").remove("modified");
        v["repository"]["default_branch"] = Value::from("main");
        let change = github_push(&v.to_string()).expect("push");
        assert_eq!(change.files, None);
        assert!(change.files_unknown());
        // Gitea's pusher is a user: its full name, else its login.
        v["pusher"] = serde_json::json!({"login": "jn", "full_name": "José Núñez", "email": "jose@example.org"});
        let change = parse_github(Forge::Gitea, "push", v.to_string().as_bytes()).expect("parses");
        let ForgeEvent::Push(change) = change else { panic!("push") };
        assert_eq!(change.who.as_deref(), Some("José Núñez <jose@example.org>"));
        v["pusher"]["full_name"] = Value::from("");
        let ForgeEvent::Push(change) = parse_github(Forge::Gitea, "push", v.to_string().as_bytes()).expect("parses")
        else {
            panic!("push")
        };
        assert_eq!(change.who.as_deref(), Some("jn <jose@example.org>"));
    }

    #[test]
    fn skip_markers_are_found_in_the_head_commit_message_without_case() {
        let markers: Vec<String> = DEFAULT_SKIP_MARKERS.iter().map(|m| m.to_string()).collect();
        let change = github_push(GITHUB_PUSH).expect("push");
        assert_eq!(change.skip_marker(&markers), None);
        let skipped = GITHUB_PUSH.replace("long text", "only docs [CI Skip]");
        assert_eq!(github_push(&skipped).expect("push").skip_marker(&markers), Some("[ci skip]"));
        let skipped = GITHUB_PUSH.replace("libgrace: fix the build", "[skip ci] libgrace: typo");
        assert_eq!(github_push(&skipped).expect("push").skip_marker(&markers), Some("[skip ci]"));
        assert_eq!(github_push(&skipped).expect("push").skip_marker(&["nobuild".to_string()]), None);
    }

    fn github_pull(action: &str, head_repo: &str) -> Value {
        serde_json::json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7, "title": "libgrace: faster", "state": "open",
                "user": {"login": "mallory"},
                "head": {"ref": "fast", "sha": "1111111111111111111111111111111111111111",
                    "repo": {"full_name": head_repo, "clone_url": format!("https://github.com/{head_repo}.git")}},
                "base": {"ref": "main", "sha": "2222222222222222222222222222222222222222",
                    "repo": {"full_name": "grace/mono", "clone_url": "https://github.com/grace/mono.git",
                        "ssh_url": "git@github.com:grace/mono.git"}}
            },
            "repository": {"full_name": "grace/mono", "clone_url": "https://github.com/grace/mono.git"},
            "sender": {"login": "mallory"}
        })
    }

    #[test]
    fn github_pull_requests_build_their_head_against_the_base_and_know_a_fork() {
        let v = github_pull("opened", "grace/mono");
        let Ok(ForgeEvent::Pull(change, PullAction::Build)) =
            parse_github(Forge::GitHub, "pull_request", v.to_string().as_bytes())
        else {
            panic!("a pull request to build")
        };
        assert_eq!(change.branch, "main");
        assert_eq!(change.revision, "1".repeat(40));
        assert_eq!(change.comments, "libgrace: faster");
        assert_eq!(change.project.as_deref(), Some("grace/mono"));
        let pull = change.pull.clone().expect("pull");
        assert_eq!((pull.number, pull.fetch_ref.as_str(), pull.fork), (7, "refs/pull/7/head", false));
        assert!(change.files_unknown());
        assert_eq!(change.source_in(&farm().components).map(|g| g.url.as_str()), Some("https://github.com/grace/mono"));
        let v = github_pull("synchronize", "mallory/mono");
        let Ok(ForgeEvent::Pull(change, PullAction::Build)) =
            parse_github(Forge::GitHub, "pull_request", v.to_string().as_bytes())
        else {
            panic!("a pull request to build")
        };
        let pull = change.pull.expect("pull");
        assert!(pull.fork);
        assert_eq!(pull.head_repository, "https://github.com/mallory/mono.git");
        // Gitea's pull request pushed to refs/for/main by a reader: its
        // head is the base repository, its ref no branch of it.
        let mut agit = github_pull("opened", "grace/mono");
        agit["pull_request"]["head"]["ref"] = Value::from("refs/pull/7/head");
        let Ok(ForgeEvent::Pull(change, _)) = parse_github(Forge::Gitea, "pull_request", agit.to_string().as_bytes())
        else {
            panic!("a pull request")
        };
        assert!(change.pull.expect("pull").fork);
        let closed = github_pull("closed", "grace/mono");
        assert!(matches!(
            parse_github(Forge::GitHub, "pull_request", closed.to_string().as_bytes()),
            Ok(ForgeEvent::Pull(_, PullAction::Close))
        ));
        let labelled = github_pull("labeled", "grace/mono");
        assert!(ignored(parse_github(Forge::GitHub, "pull_request", labelled.to_string().as_bytes())));
        let mut evil = github_pull("opened", "grace/mono");
        evil["pull_request"]["base"]["ref"] = Value::from("-x");
        assert!(matches!(
            parse_github(Forge::GitHub, "pull_request", evil.to_string().as_bytes()),
            Err(PayloadError::Invalid("pull_request.base.ref", _))
        ));
    }

    #[test]
    fn a_comment_may_ask_for_a_rebuild_and_github_says_who_may() {
        let v = serde_json::json!({
            "action": "created",
            "issue": {"number": 7, "pull_request": {"url": "https://api.github.com/repos/grace/mono/pulls/7"}},
            "comment": {"body": "kiln rebuild please", "user": {"login": "grace"}, "author_association": "OWNER"},
            "repository": {"full_name": "grace/mono", "clone_url": "https://github.com/grace/mono.git"}
        });
        let Ok(ForgeEvent::Comment(c)) = parse_github(Forge::GitHub, "issue_comment", v.to_string().as_bytes()) else {
            panic!("a comment")
        };
        assert_eq!((c.number, c.login.as_str(), c.permitted), (7, "grace", true));
        let mut outsider = v.clone();
        outsider["comment"]["author_association"] = Value::from("NONE");
        let Ok(ForgeEvent::Comment(c)) = parse_github(Forge::GitHub, "issue_comment", outsider.to_string().as_bytes())
        else {
            panic!("a comment")
        };
        assert!(!c.permitted);
        let mut on_issue = v;
        on_issue["issue"].as_object_mut().expect("object").remove("pull_request");
        assert!(ignored(parse_github(Forge::GitHub, "issue_comment", on_issue.to_string().as_bytes())));
    }

    #[test]
    fn gitlab_merge_requests_and_notes() {
        let mr = serde_json::json!({
            "object_kind": "merge_request",
            "user": {"name": "Bo Lee", "username": "bo", "email": "bo@example.org"},
            "project": {"path_with_namespace": "grace/mono", "git_ssh_url": "git@gitlab.example.org:grace/mono.git",
                "git_http_url": "https://gitlab.example.org/grace/mono.git"},
            "object_attributes": {"iid": 3, "action": "open", "title": "Draft: tools", "target_branch": "main",
                "source_branch": "tools", "source_project_id": 10, "target_project_id": 10,
                "source": {"git_http_url": "https://gitlab.example.org/grace/mono.git"},
                "last_commit": {"id": "3333333333333333333333333333333333333333", "message": "tools: flag [skip ci]\n",
                    "author": {"name": "Bo Lee", "email": "bo@example.org"}}}
        });
        let Ok(ForgeEvent::Pull(change, PullAction::Build)) =
            parse_gitlab("Merge Request Hook", mr.to_string().as_bytes())
        else {
            panic!("a merge request")
        };
        let pull = change.pull.clone().expect("pull");
        assert_eq!((pull.number, pull.fetch_ref.as_str(), pull.fork), (3, "refs/merge-requests/3/head", false));
        assert_eq!(change.author.as_deref(), Some("Bo Lee <bo@example.org>"));
        assert_eq!(change.skip_marker(&["[skip ci]".to_string()]), Some("[skip ci]"));
        let mut retitled = mr.clone();
        retitled["object_attributes"]["action"] = Value::from("update");
        assert!(ignored(parse_gitlab("Merge Request Hook", retitled.to_string().as_bytes())));
        retitled["object_attributes"]["oldrev"] = Value::from("4".repeat(40));
        assert!(matches!(
            parse_gitlab("Merge Request Hook", retitled.to_string().as_bytes()),
            Ok(ForgeEvent::Pull(_, PullAction::Build))
        ));
        let mut merged = mr.clone();
        merged["object_attributes"]["action"] = Value::from("merge");
        merged["object_attributes"]["source_project_id"] = Value::from(11);
        let Ok(ForgeEvent::Pull(change, PullAction::Close)) =
            parse_gitlab("Merge Request Hook", merged.to_string().as_bytes())
        else {
            panic!("a merge request")
        };
        assert!(change.pull.expect("pull").fork);
        let note = serde_json::json!({
            "object_kind": "note", "user": {"username": "bo"},
            "project": {"path_with_namespace": "grace/mono", "git_http_url": "https://gitlab.example.org/grace/mono.git"},
            "object_attributes": {"noteable_type": "MergeRequest", "note": "kiln rebuild"},
            "merge_request": {"iid": 3}
        });
        let Ok(ForgeEvent::Comment(c)) = parse_gitlab("Note Hook", note.to_string().as_bytes()) else { panic!("note") };
        assert_eq!((c.number, c.login.as_str(), c.permitted), (3, "bo", false));
    }

    #[test]
    fn an_older_gitlab_payload_matches_by_its_ssh_repository_url() {
        let gl = r#"{"object_kind": "push", "ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
          "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "user_name": "Jo", "total_commits_count": 1,
          "repository": {"name": "mono", "url": "git@github.com:grace/mono.git"},
          "commits": [{"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "doc", "added": ["README.md"]}]}"#;
        let Ok(ForgeEvent::Push(change)) = parse_gitlab("Push Hook", gl.as_bytes()) else { panic!("a push") };
        assert!(change.created);
        let names: Vec<String> = change.components(&farm().components).iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["docs"]);
    }

    #[test]
    fn only_pull_request_refs_may_be_fetched() {
        for good in ["refs/pull/7/head", "refs/merge-requests/12/head"] {
            assert_eq!(check_fetch_ref(good), Ok(()), "{good}");
        }
        for bad in [
            "refs/heads/main",
            "refs/pull//head",
            "refs/pull/7/merge",
            "refs/pull/../head",
            "--upload-pack=x",
            "refs/pull/7/head:refs/heads/main",
        ] {
            assert!(check_fetch_ref(bad).is_err(), "{bad}");
        }
    }
}
