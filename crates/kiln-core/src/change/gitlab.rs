//! GitLab's hook payloads: `Push Hook`, `Merge Request Hook` and
//! `Note Hook` (a comment on a merge request).

use super::*;
use crate::config::{check_branch, check_revision};

/// Reads a delivery of event `event` (the `X-Gitlab-Event` header).
pub fn parse_gitlab(event: &str, body: &[u8]) -> Result<ForgeEvent, PayloadError> {
    match event {
        "Push Hook" => push(&json(body)?),
        "Merge Request Hook" => merge_request(&json(body)?),
        "Note Hook" => note(&json(body)?),
        other => Ok(ForgeEvent::Ignored(format!(
            "event {other:?} ignored; kiln builds on Push Hook and Merge Request Hook, and rebuilds on Note Hook"
        ))),
    }
}

/// The URLs a payload gives for its project, in current and older fields
/// (older payloads name it only as `repository.url`, an SSH URL).
fn project_urls(v: &Value) -> Vec<String> {
    urls(
        v,
        &[
            &["project", "git_http_url"],
            &["project", "git_ssh_url"],
            &["project", "web_url"],
            &["project", "http_url"],
            &["project", "ssh_url"],
            &["repository", "git_http_url"],
            &["repository", "git_ssh_url"],
            &["repository", "homepage"],
            &["repository", "url"],
        ],
    )
}

fn push(v: &Value) -> Result<ForgeEvent, PayloadError> {
    if text(v, &["object_kind"]).is_some_and(|k| k != "push") {
        return Ok(ForgeEvent::Ignored("not a push to a branch (a tag); nothing to build".into()));
    }
    let r = text(v, &["ref"]).ok_or(PayloadError::Missing("ref"))?;
    let Some(branch) = branch_of(r) else {
        return Ok(ForgeEvent::Ignored("not a push to a branch (a tag); nothing to build".into()));
    };
    check_branch(branch).map_err(|e| PayloadError::Invalid("ref", e))?;
    let after = text(v, &["after"]).ok_or(PayloadError::Missing("after"))?;
    if is_null_commit(after) {
        return Ok(ForgeEvent::Ignored(format!("branch {branch} was deleted; nothing to build")));
    }
    check_revision(after).map_err(|e| PayloadError::Invalid("after", e))?;
    let u = project_urls(v);
    if u.is_empty() {
        return Err(PayloadError::Missing("repository URL"));
    }
    let commits: &[Value] = v.get("commits").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    // GitLab gives at most 20 commits and says how many there were.
    let cut = v.get("total_commits_count").and_then(Value::as_u64).is_some_and(|t| t > commits.len() as u64);
    let files = (!cut && !commits.is_empty()).then(|| files_of(commits));
    let head = commits.iter().find(|c| text(c, &["id"]) == Some(after));
    let msg = message(head.and_then(|c| text(c, &["message"])));
    let pusher = first_text(v, &[&["user_name"], &["user_username"]]);
    Ok(ForgeEvent::Push(Change {
        urls: u,
        branch: branch.to_string(),
        revision: after.to_string(),
        files,
        who: who(pusher, text(v, &["user_email"])),
        author: head.and_then(|c| who(text(c, &["author", "name"]), text(c, &["author", "email"]))),
        comments: subject(&msg),
        message: msg,
        project: text(v, &["project", "path_with_namespace"]).map(str::to_string),
        default_branch: text(v, &["project", "default_branch"]).map(str::to_string),
        created: text(v, &["before"]).is_some_and(is_null_commit),
        pull: None,
    }))
}

fn merge_request(v: &Value) -> Result<ForgeEvent, PayloadError> {
    let mr = v.get("object_attributes").filter(|o| o.is_object()).ok_or(PayloadError::Missing("object_attributes"))?;
    let action = match text(mr, &["action"]).unwrap_or("") {
        "open" | "reopen" => PullAction::Build,
        // An update without `oldrev` changed the title or labels, not the code.
        "update" if mr.get("oldrev").is_some_and(|o| o.is_string()) => PullAction::Build,
        "close" | "merge" => PullAction::Close,
        other => return Ok(ForgeEvent::Ignored(format!("merge request action {other:?} starts nothing"))),
    };
    let number = mr.get("iid").and_then(Value::as_u64).ok_or(PayloadError::Missing("object_attributes.iid"))?;
    let base_branch = text(mr, &["target_branch"]).ok_or(PayloadError::Missing("object_attributes.target_branch"))?;
    check_branch(base_branch).map_err(|e| PayloadError::Invalid("object_attributes.target_branch", e))?;
    let head_sha = text(mr, &["last_commit", "id"]).ok_or(PayloadError::Missing("object_attributes.last_commit.id"))?;
    check_revision(head_sha).map_err(|e| PayloadError::Invalid("object_attributes.last_commit.id", e))?;
    let mut u = project_urls(v);
    add_urls(&mut u, urls(mr, &[&["target", "git_http_url"], &["target", "git_ssh_url"], &["target", "web_url"]]));
    if u.is_empty() {
        return Err(PayloadError::Missing("repository URL"));
    }
    let source_id = mr.get("source_project_id").and_then(Value::as_u64);
    let fork = source_id.is_none() || source_id != mr.get("target_project_id").and_then(Value::as_u64);
    let head_repository =
        first_text(mr, &[&["source", "git_http_url"], &["source", "web_url"], &["source", "git_ssh_url"]])
            .unwrap_or_default()
            .to_string();
    let title = text(mr, &["title"]).unwrap_or("");
    let last_message = text(mr, &["last_commit", "message"]).unwrap_or("");
    Ok(ForgeEvent::Pull(
        Change {
            urls: u,
            branch: base_branch.to_string(),
            revision: head_sha.to_string(),
            files: None,
            who: who(first_text(v, &[&["user", "name"], &["user", "username"]]), text(v, &["user", "email"])),
            author: who(text(mr, &["last_commit", "author", "name"]), text(mr, &["last_commit", "author", "email"])),
            comments: subject(title),
            message: message(Some(&format!("{title}\n{last_message}"))),
            project: text(v, &["project", "path_with_namespace"]).map(str::to_string),
            default_branch: None,
            created: false,
            pull: Some(PullRequest { number, fetch_ref: Forge::GitLab.pull_ref(number), head_repository, fork }),
        },
        action,
    ))
}

fn note(v: &Value) -> Result<ForgeEvent, PayloadError> {
    let attrs =
        v.get("object_attributes").filter(|o| o.is_object()).ok_or(PayloadError::Missing("object_attributes"))?;
    if text(attrs, &["noteable_type"]) != Some("MergeRequest") {
        return Ok(ForgeEvent::Ignored("a comment on something other than a merge request".into()));
    }
    let number = v
        .get("merge_request")
        .and_then(|m| m.get("iid"))
        .and_then(Value::as_u64)
        .ok_or(PayloadError::Missing("merge_request.iid"))?;
    let body = text(attrs, &["note"]).ok_or(PayloadError::Missing("object_attributes.note"))?;
    let login = text(v, &["user", "username"]).ok_or(PayloadError::Missing("user.username"))?;
    Ok(ForgeEvent::Comment(Comment {
        urls: project_urls(v),
        project: text(v, &["project", "path_with_namespace"]).map(str::to_string),
        number,
        body: message(Some(body)),
        login: clean(login, 100),
        // A note's payload does not say what the commenter may do.
        permitted: false,
    }))
}
