//! Forges post push events here (`/change_hook/github`,
//! `/change_hook/gitlab`, `/change_hook/gitea`), each delivery checked
//! against the forge's secret in constant time before its body is read as
//! JSON. A push becomes one request for every component whose git source
//! is that repository and branch and whose files it touched, at the pushed
//! revision ([`crate::ops::requests::submit_change`], which the poller
//! calls too).

use crate::caller::Caller;
use crate::http::ApiError;
use crate::ops;
use crate::shared::Shared;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, Mac};
use kiln_core::change::{parse_github_push, parse_gitlab_push, Change, PayloadError};
use kiln_core::config::ForgeHook;
use sha2::Sha256;
use std::sync::Arc;

type AppState = Arc<Shared>;

/// What a hook answers: the builds a push started (possibly none, and why).
#[derive(serde::Serialize)]
pub struct HookAnswer {
    pub message: String,
    pub request_id: Option<i64>,
    pub builds: Vec<i64>,
}

type HookResult = Result<Json<HookAnswer>, ApiError>;

fn answer(message: impl Into<String>) -> HookResult {
    Ok(Json(HookAnswer { message: message.into(), request_id: None, builds: Vec::new() }))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The forge's hook config and its secret, or why there is none.
fn hook_secret(
    s: &Shared,
    forge: &str,
    pick: fn(&kiln_core::config::Hooks) -> &Option<ForgeHook>,
) -> Result<String, ApiError> {
    let farm = s.farm();
    let Some(hook) = pick(&farm.cfg.hooks) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no {forge} hook is configured ([hooks.{forge}])")));
    };
    let unusable = |why: &str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the {forge} hook's secret {why}; see the master's log"))
    };
    // An empty key (refused by `secret`) would make every signature
    // computable by anyone.
    farm.secret(&hook.secret, &format!("[hooks.{forge}] secret")).map_err(|e| {
        tracing::error!(error = %e, "cannot use a hook's secret; its deliveries are refused");
        unusable("cannot be read or is empty")
    })
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

pub async fn github(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> HookResult {
    let secret = hook_secret(&s, "github", |h| &h.github)?;
    let sig = header(&headers, "x-hub-signature-256")
        .and_then(|v| v.strip_prefix("sha256="))
        .ok_or_else(|| unauthorized("the delivery has no X-Hub-Signature-256"))?;
    if !signature_ok(&secret, &body, sig) {
        return Err(unauthorized("X-Hub-Signature-256 does not match the body and the configured secret"));
    }
    match header(&headers, "x-github-event") {
        Some("push") => {}
        Some("ping") => return answer("pong"),
        other => return answer(format!("event {:?} ignored; kiln builds on push", other.unwrap_or(""))),
    }
    let change = parse_github_push(&body).map_err(bad_payload)?;
    handle(&s, change, "github").await
}

pub async fn gitea(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> HookResult {
    let secret = hook_secret(&s, "gitea", |h| &h.gitea)?;
    let sig = header(&headers, "x-gitea-signature")
        .or_else(|| header(&headers, "x-forgejo-signature"))
        .or_else(|| header(&headers, "x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")))
        .ok_or_else(|| unauthorized("the delivery has no X-Gitea-Signature"))?;
    if !signature_ok(&secret, &body, sig) {
        return Err(unauthorized("the delivery's signature does not match the body and the configured secret"));
    }
    let event = header(&headers, "x-gitea-event").or_else(|| header(&headers, "x-forgejo-event"));
    if event != Some("push") {
        return answer(format!("event {:?} ignored; kiln builds on push", event.unwrap_or("")));
    }
    let change = parse_github_push(&body).map_err(bad_payload)?;
    handle(&s, change, "gitea").await
}

pub async fn gitlab(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> HookResult {
    let secret = hook_secret(&s, "gitlab", |h| &h.gitlab)?;
    let token = header(&headers, "x-gitlab-token").ok_or_else(|| unauthorized("the delivery has no X-Gitlab-Token"))?;
    if !crate::caller::tokens_match(&secret, token) {
        return Err(unauthorized("X-Gitlab-Token is not the configured secret"));
    }
    if header(&headers, "x-gitlab-event") != Some("Push Hook") {
        return answer("event ignored; kiln builds on Push Hook");
    }
    let change = parse_gitlab_push(&body).map_err(bad_payload)?;
    handle(&s, change, "gitlab").await
}

async fn handle(s: &Arc<Shared>, change: Option<Change>, forge: &str) -> HookResult {
    let Some(change) = change else {
        return answer("not a push to a branch (a tag or a deleted branch); nothing to build");
    };
    // The delivery's signature showed it comes from the forge.
    match ops::requests::submit_change(s, &Caller::system(forge), &change, forge).await? {
        Some(created) => Ok(Json(HookAnswer {
            message: format!("{} builds requested", created.builds.len()),
            request_id: Some(created.request_id),
            builds: created.builds.iter().map(|b| b.id).collect(),
        })),
        None => answer(format!(
            "no component builds from {} branch {} with the files this push touched",
            change.urls.first().map(String::as_str).unwrap_or("?"),
            change.branch
        )),
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
        let refused = hook_secret(&t.shared, "github", |h| &h.github).expect_err("empty");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.message.contains("is empty"), "{}", refused.message);
        // With an HMAC key of nothing, anyone could sign a delivery.
        assert!(signature_ok(
            "",
            b"{}",
            &hex::encode(Hmac::<Sha256>::new_from_slice(b"").expect("key").chain_update(b"{}").finalize().into_bytes())
        ));
        std::fs::write(&file, "s3cret\n").expect("write");
        assert_eq!(hook_secret(&t.shared, "github", |h| &h.github).expect("secret"), "s3cret");
        // A config whose hook secret is there but empty is not loaded at all.
        std::fs::write(&file, " \n").expect("write");
        let config = format!("{FARM}\n[hooks.github]\nsecret_file = \"gh.secret\"\n");
        let refused = crate::farm::LoadedFarm::from_text(&t.shared.farm().base_dir.join("farm.toml"), config);
        let e = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("[hooks.github] secret is empty"), "{e}");
    }
}
