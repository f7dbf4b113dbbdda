//! GitHub's hook payloads, which Gitea and Forgejo send too (with a few
//! fields of their own): `push`, `pull_request` and `issue_comment`.

use super::*;
use crate::config::{check_branch, check_revision};

/// Reads a delivery of event `event` (the `X-GitHub-Event` or
/// `X-Gitea-Event` header) from `forge`.
pub fn parse_github(forge: Forge, event: &str, body: &[u8]) -> Result<ForgeEvent, PayloadError> {
    match event {
        "push" => push(&json(body)?),
        "pull_request" => pull(forge, &json(body)?),
        // Gitea names a comment on a pull request either way.
        "issue_comment" | "pull_request_comment" => comment(forge, &json(body)?),
        other => Ok(ForgeEvent::Ignored(format!(
            "event {other:?} ignored; kiln builds on push and pull_request, and rebuilds on issue_comment"
        ))),
    }
}

/// The URLs a repository object gives for itself.
fn repo_urls(repo: Option<&Value>) -> Vec<String> {
    repo.map(|r| urls(r, &[&["clone_url"], &["ssh_url"], &["html_url"], &["git_url"], &["url"]])).unwrap_or_default()
}

/// Who pushed: GitHub's `pusher` (name, email), Gitea's (a user, whose
/// full name is preferred), else the sender's login.
fn pusher(v: &Value) -> Option<String> {
    let name = first_text(
        v,
        &[
            &["pusher", "full_name"],
            &["pusher", "name"],
            &["pusher", "login"],
            &["pusher", "username"],
            &["sender", "login"],
        ],
    );
    who(name, text(v, &["pusher", "email"]))
}

fn push(v: &Value) -> Result<ForgeEvent, PayloadError> {
    let r = text(v, &["ref"]).ok_or(PayloadError::Missing("ref"))?;
    let Some(branch) = branch_of(r) else {
        return Ok(ForgeEvent::Ignored("not a push to a branch (a tag); nothing to build".into()));
    };
    check_branch(branch).map_err(|e| PayloadError::Invalid("ref", e))?;
    let after = text(v, &["after"]).ok_or(PayloadError::Missing("after"))?;
    if is_null_commit(after) || v.get("deleted").and_then(Value::as_bool) == Some(true) {
        return Ok(ForgeEvent::Ignored(format!("branch {branch} was deleted; nothing to build")));
    }
    check_revision(after).map_err(|e| PayloadError::Invalid("after", e))?;
    let u = repo_urls(v.get("repository"));
    if u.is_empty() {
        return Err(PayloadError::Missing("repository URL"));
    }
    let commits: &[Value] = v.get("commits").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let head = v.get("head_commit").filter(|h| h.is_object());
    // GitHub lists every commit of a push in a webhook delivery; Gitea
    // says when it cut the list (`total_commits`).
    let cut = v.get("total_commits").and_then(Value::as_u64).is_some_and(|t| t > commits.len() as u64);
    let files = if cut {
        None
    } else if !commits.is_empty() {
        Some(files_of(commits))
    } else {
        // A new branch (or a branch moved to a known commit) lists no
        // commits; the head commit says what it changed.
        head.filter(|h| lists_files(h)).map(|h| files_of([h]))
    };
    let created =
        v.get("created").and_then(Value::as_bool) == Some(true) || text(v, &["before"]).is_some_and(is_null_commit);
    let msg = message(head.and_then(|h| text(h, &["message"])));
    Ok(ForgeEvent::Push(Change {
        urls: u,
        branch: branch.to_string(),
        revision: after.to_string(),
        files,
        who: pusher(v),
        author: head.and_then(|h| who(text(h, &["author", "name"]), text(h, &["author", "email"]))),
        comments: subject(&msg),
        message: msg,
        project: text(v, &["repository", "full_name"]).map(str::to_string),
        default_branch: text(v, &["repository", "default_branch"]).map(str::to_string),
        created,
        pull: None,
    }))
}

fn pull(forge: Forge, v: &Value) -> Result<ForgeEvent, PayloadError> {
    let action = match text(v, &["action"]).unwrap_or("") {
        "opened" | "reopened" | "synchronize" | "synchronized" => PullAction::Build,
        "closed" => PullAction::Close,
        other => return Ok(ForgeEvent::Ignored(format!("pull request action {other:?} starts nothing"))),
    };
    let pr = v.get("pull_request").filter(|p| p.is_object()).ok_or(PayloadError::Missing("pull_request"))?;
    let number = v
        .get("number")
        .and_then(Value::as_u64)
        .or_else(|| pr.get("number").and_then(Value::as_u64))
        .ok_or(PayloadError::Missing("pull request number"))?;
    let base_branch = text(pr, &["base", "ref"]).ok_or(PayloadError::Missing("pull_request.base.ref"))?;
    check_branch(base_branch).map_err(|e| PayloadError::Invalid("pull_request.base.ref", e))?;
    let head_sha = text(pr, &["head", "sha"]).ok_or(PayloadError::Missing("pull_request.head.sha"))?;
    check_revision(head_sha).map_err(|e| PayloadError::Invalid("pull_request.head.sha", e))?;
    let base_repo = pr.get("base").and_then(|b| b.get("repo")).filter(|r| r.is_object()).or(v.get("repository"));
    let mut u = repo_urls(base_repo);
    add_urls(&mut u, repo_urls(v.get("repository")));
    if u.is_empty() {
        return Err(PayloadError::Missing("repository URL"));
    }
    let project = base_repo.and_then(|r| text(r, &["full_name"])).map(str::to_string);
    // A head repository that is gone (a deleted fork) is nobody's either.
    let head_repo = pr.get("head").and_then(|h| h.get("repo")).filter(|r| r.is_object());
    let head_name = head_repo.and_then(|r| text(r, &["full_name"]));
    // Gitea and Forgejo also take pull requests pushed to
    // `refs/for/BRANCH` by anyone who may read the repository ("AGit"):
    // their head is the base repository, but their head ref is no branch
    // of it. Only a branch of the repository itself is its writers' code.
    let head_ref = text(pr, &["head", "ref"]).unwrap_or("");
    let agit = forge != Forge::GitHub && (head_ref.is_empty() || head_ref.starts_with("refs/"));
    let fork = head_name.is_none() || head_name != project.as_deref() || agit;
    let head_repository = head_repo
        .and_then(|r| first_text(r, &[&["clone_url"], &["html_url"], &["ssh_url"]]))
        .unwrap_or_default()
        .to_string();
    let title = text(pr, &["title"]).unwrap_or("");
    Ok(ForgeEvent::Pull(
        Change {
            urls: u,
            branch: base_branch.to_string(),
            revision: head_sha.to_string(),
            files: None,
            who: who(first_text(v, &[&["sender", "full_name"], &["sender", "login"]]), None),
            author: who(first_text(pr, &[&["user", "full_name"], &["user", "login"]]), None),
            comments: subject(title),
            message: message(Some(title)),
            project,
            default_branch: None,
            created: false,
            pull: Some(PullRequest { number, fetch_ref: forge.pull_ref(number), head_repository, fork }),
        },
        action,
    ))
}

fn comment(forge: Forge, v: &Value) -> Result<ForgeEvent, PayloadError> {
    if text(v, &["action"]).is_some_and(|a| a != "created") {
        return Ok(ForgeEvent::Ignored("only a new comment can ask for a rebuild".into()));
    }
    let issue = v.get("issue").filter(|i| i.is_object()).ok_or(PayloadError::Missing("issue"))?;
    let on_pull = issue.get("pull_request").is_some_and(|p| !p.is_null())
        || v.get("is_pull").and_then(Value::as_bool) == Some(true);
    if !on_pull {
        return Ok(ForgeEvent::Ignored("a comment on an issue, not a pull request".into()));
    }
    let number = issue.get("number").and_then(Value::as_u64).ok_or(PayloadError::Missing("issue.number"))?;
    let body = text(v, &["comment", "body"]).ok_or(PayloadError::Missing("comment.body"))?;
    let login = first_text(v, &[&["comment", "user", "login"], &["sender", "login"]])
        .ok_or(PayloadError::Missing("comment.user.login"))?;
    // Only GitHub says how the commenter stands with the repository.
    let association = text(v, &["comment", "author_association"]).unwrap_or("");
    let permitted = forge == Forge::GitHub && matches!(association, "OWNER" | "MEMBER" | "COLLABORATOR");
    Ok(ForgeEvent::Comment(Comment {
        urls: repo_urls(v.get("repository")),
        project: text(v, &["repository", "full_name"]).map(str::to_string),
        number,
        body: message(Some(body)),
        login: clean(login, 100),
        permitted,
    }))
}
