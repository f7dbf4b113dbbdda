//! Forges post their events here (`/change_hook/github`,
//! `/change_hook/gitlab`, `/change_hook/gitea`), each delivery checked
//! against the forge's secret in constant time before its body is read
//! (GitHub and Gitea sign the raw body, sent as JSON or as a form's
//! `payload` field). Then:
//! - a push becomes one request for every component whose git source is
//!   that repository and branch and whose files it touched, at the pushed
//!   revision ([`crate::ops::requests::submit_change`], which the poller
//!   calls too), unless the head commit carries a skip marker;
//! - a pull (merge) request opened or updated becomes test builds of its
//!   head, when `pull_requests = true` (and, from a fork, `forks = true`);
//!   closed or merged, its unfinished test builds are cancelled
//!   ([`crate::ops::pulls`]);
//! - a comment holding the rebuild phrase, by someone the forge or the
//!   config allows, rebuilds the pull request's latest test builds.

use crate::caller::Caller;
use crate::http::ApiError;
use crate::ops;
use crate::ops::pulls::PullRef;
use crate::shared::Shared;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, Mac};
use kiln_core::change::{parse_github, parse_gitlab, Change, Comment, Forge, ForgeEvent, PayloadError, PullAction};
use kiln_core::config::ForgeHook;
use sha2::Sha256;
use std::borrow::Cow;
use std::sync::Arc;

type AppState = Arc<Shared>;

/// What a hook answers: the builds a delivery started or cancelled
/// (possibly none, and why).
#[derive(serde::Serialize)]
pub struct HookAnswer {
    pub message: String,
    pub request_id: Option<i64>,
    pub builds: Vec<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<i64>,
}

type HookResult = Result<Json<HookAnswer>, ApiError>;

fn answer(message: impl Into<String>) -> HookResult {
    Ok(Json(HookAnswer { message: message.into(), request_id: None, builds: Vec::new(), cancelled: Vec::new() }))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The forge's hook config and its secret, or why there is none.
fn hook_and_secret(s: &Shared, forge: Forge) -> Result<(ForgeHook, String), ApiError> {
    let farm = s.farm();
    let name = forge.as_str();
    let hooks = &farm.cfg.hooks;
    let hook = match forge {
        Forge::GitHub => &hooks.github,
        Forge::GitLab => &hooks.gitlab,
        Forge::Gitea => &hooks.gitea,
    };
    let Some(hook) = hook else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no {name} hook is configured ([hooks.{name}])")));
    };
    // An empty key (refused by `secret`) would make every signature
    // computable by anyone.
    let secret = farm.secret(&hook.secret, &format!("[hooks.{name}] secret")).map_err(|e| {
        tracing::error!(error = %e, "cannot use a hook's secret; its deliveries are refused");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {name} hook's secret cannot be read or is empty; see the master's log"),
        )
    })?;
    Ok((hook.clone(), secret))
}

/// Checks a hex HMAC-SHA256 of the body in constant time.
fn signature_ok(secret: &str, body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, why.to_string())
}

fn bad_payload(e: PayloadError) -> ApiError {
    ApiError::bad(e.to_string())
}

/// The JSON a signed delivery carries: the body itself, or the `payload`
/// field of a form (GitHub's and Gitea's other content type).
fn payload<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, ApiError> {
    if !super::is_form(headers) {
        return Ok(Cow::Borrowed(body));
    }
    let fields = super::form_fields(body)?;
    match fields.into_iter().find(|(name, _)| name == "payload") {
        Some((_, json)) => Ok(Cow::Owned(json.into_bytes())),
        None => Err(ApiError::bad("the form has no `payload` field (the event's JSON)")),
    }
}

pub async fn github(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> HookResult {
    let (hook, secret) = hook_and_secret(&s, Forge::GitHub)?;
    let Some(sig) = header(&headers, "x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")) else {
        if header(&headers, "x-hub-signature").is_some() {
            return Err(unauthorized(
                "the delivery is signed only with SHA-1 (X-Hub-Signature), which kiln does not trust; \
                 it checks X-Hub-Signature-256 (HMAC-SHA256), which GitHub and GitHub Enterprise send",
            ));
        }
        return Err(unauthorized("the delivery has no X-Hub-Signature-256"));
    };
    // Over the raw body, as GitHub computes it, whatever its content type.
    if !signature_ok(&secret, &body, sig) {
        return Err(unauthorized("X-Hub-Signature-256 does not match the body and the configured secret"));
    }
    let event = header(&headers, "x-github-event").unwrap_or("");
    if event == "ping" {
        return answer("pong");
    }
    let json = payload(&headers, &body)?;
    let event = parse_github(Forge::GitHub, event, &json).map_err(bad_payload)?;
    act(&s, Forge::GitHub, &hook, event).await
}

pub async fn gitea(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> HookResult {
    let (hook, secret) = hook_and_secret(&s, Forge::Gitea)?;
    let sig = header(&headers, "x-gitea-signature")
        .or_else(|| header(&headers, "x-forgejo-signature"))
        .or_else(|| header(&headers, "x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")))
        .ok_or_else(|| unauthorized("the delivery has no X-Gitea-Signature"))?;
    if !signature_ok(&secret, &body, sig) {
        return Err(unauthorized("the delivery's signature does not match the body and the configured secret"));
    }
    let event = header(&headers, "x-gitea-event").or_else(|| header(&headers, "x-forgejo-event")).unwrap_or("");
    let json = payload(&headers, &body)?;
    let event = parse_github(Forge::Gitea, event, &json).map_err(bad_payload)?;
    act(&s, Forge::Gitea, &hook, event).await
}

pub async fn gitlab(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> HookResult {
    let (hook, secret) = hook_and_secret(&s, Forge::GitLab)?;
    let token = header(&headers, "x-gitlab-token").ok_or_else(|| unauthorized("the delivery has no X-Gitlab-Token"))?;
    if !crate::caller::tokens_match(&secret, token) {
        return Err(unauthorized("X-Gitlab-Token is not the configured secret"));
    }
    let event = parse_gitlab(header(&headers, "x-gitlab-event").unwrap_or(""), &body).map_err(bad_payload)?;
    act(&s, Forge::GitLab, &hook, event).await
}

/// Does what a verified delivery asks.
async fn act(s: &Arc<Shared>, forge: Forge, hook: &ForgeHook, event: ForgeEvent) -> HookResult {
    let name = forge.as_str();
    match event {
        ForgeEvent::Ignored(why) => answer(why),
        ForgeEvent::Push(change) => match change.skip_marker(&hook.skip_markers) {
            Some(marker) => answer(format!("the head commit's message holds {marker:?}; nothing is built")),
            None => submit(s, forge, change).await,
        },
        ForgeEvent::Pull(change, action) => {
            let Some(pull) = change.pull.clone() else { return answer("not a pull request") };
            if !hook.pull_requests {
                return answer(format!(
                    "pull requests are not built here ([hooks.{name}] pull_requests = true builds them)"
                ));
            }
            let which =
                PullRef { forge: name, project: change.project.as_deref(), urls: &change.urls, number: pull.number };
            match action {
                PullAction::Close => {
                    let cancelled = ops::pulls::close(s, &which).await?;
                    Ok(Json(HookAnswer {
                        message: format!(
                            "pull request #{} closed: {} test builds cancelled",
                            pull.number,
                            cancelled.len()
                        ),
                        request_id: None,
                        builds: Vec::new(),
                        cancelled,
                    }))
                }
                PullAction::Build if pull.fork && !hook.forks => answer(format!(
                    "pull request #{} comes from another repository; [hooks.{name}] forks = true test-builds those",
                    pull.number
                )),
                PullAction::Build => match change.skip_marker(&hook.skip_markers) {
                    Some(marker) => answer(format!("pull request #{} holds {marker:?}; nothing is built", pull.number)),
                    None => submit(s, forge, change).await,
                },
            }
        }
        ForgeEvent::Comment(comment) => rebuild_on_comment(s, forge, hook, comment).await,
    }
}

async fn submit(s: &Arc<Shared>, forge: Forge, change: Change) -> HookResult {
    let name = forge.as_str();
    // The delivery's signature showed it comes from the forge. On a task
    // of its own: learning a pull request's files may take a fetch longer
    // than the forge waits, and a forge that hangs up must not cut it short.
    let (shared, asked) = (s.clone(), change.clone());
    let made =
        tokio::spawn(async move { ops::requests::submit_change(&shared, &Caller::system(name), &asked, name).await })
            .await
            .map_err(ApiError::internal)??;
    match made {
        Some(created) => Ok(Json(HookAnswer {
            message: match &change.pull {
                Some(p) => format!("{} test builds of pull request #{} requested", created.builds.len(), p.number),
                None => format!("{} builds requested", created.builds.len()),
            },
            request_id: Some(created.request_id),
            builds: created.builds.iter().map(|b| b.id).collect(),
            cancelled: Vec::new(),
        })),
        None => answer(format!(
            "no component builds from {} branch {} with the files this {} touched",
            change.urls.first().map(String::as_str).unwrap_or("?"),
            change.branch,
            if change.pull.is_some() { "pull request" } else { "push" }
        )),
    }
}

async fn rebuild_on_comment(s: &Arc<Shared>, forge: Forge, hook: &ForgeHook, c: Comment) -> HookResult {
    let name = forge.as_str();
    if !hook.pull_requests {
        return answer(format!("pull requests are not built here ([hooks.{name}] pull_requests = true builds them)"));
    }
    if !c.body.to_lowercase().contains(&hook.rebuild_phrase.to_lowercase()) {
        return answer(format!("the comment does not ask for a rebuild ({:?})", hook.rebuild_phrase));
    }
    if !(c.permitted || hook.rebuild_by.iter().any(|l| l == &c.login)) {
        return answer(format!(
            "{} may not ask for rebuilds: the forge does not say they can write to the repository, \
             and [hooks.{name}] rebuild_by does not name them",
            c.login
        ));
    }
    let which = PullRef { forge: name, project: c.project.as_deref(), urls: &c.urls, number: c.number };
    let caller = Caller::system(name).named(format!("{} ({name} comment)", c.login));
    match ops::pulls::rebuild_latest(s, &caller, &which, hook.forks).await? {
        None => answer(format!("pull request #{} has no test builds to repeat", c.number)),
        Some(made) => Ok(Json(HookAnswer {
            message: format!("pull request #{}: {} test builds requested again", c.number, made.len()),
            request_id: made.first().map(|m| m.request_id),
            builds: made.iter().flat_map(|m| m.builds.iter().map(|b| b.id)).collect(),
            cancelled: Vec::new(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{Tester, FARM};

    #[tokio::test]
    async fn an_empty_secret_refuses_every_delivery() {
        let t = Tester::with_config(&format!("{FARM}\n[hooks.github]\nsecret_file = \"gh.secret\"\n")).await;
        let file = t.shared.farm().base_dir.join("gh.secret");
        std::fs::write(&file, " \n").expect("write");
        let refused = hook_and_secret(&t.shared, Forge::GitHub).expect_err("empty");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.message.contains("is empty"), "{}", refused.message);
        // With an HMAC key of nothing, anyone could sign a delivery.
        assert!(signature_ok(
            "",
            b"{}",
            &hex::encode(Hmac::<Sha256>::new_from_slice(b"").expect("key").chain_update(b"{}").finalize().into_bytes())
        ));
        std::fs::write(&file, "s3cret\n").expect("write");
        assert_eq!(hook_and_secret(&t.shared, Forge::GitHub).expect("secret").1, "s3cret");
        // A config whose hook secret is there but empty is not loaded at all.
        std::fs::write(&file, " \n").expect("write");
        let config = format!("{FARM}\n[hooks.github]\nsecret_file = \"gh.secret\"\n");
        let refused = crate::farm::LoadedFarm::from_text(&t.shared.farm().base_dir.join("farm.toml"), config);
        let e = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("[hooks.github] secret is empty"), "{e}");
    }
}
