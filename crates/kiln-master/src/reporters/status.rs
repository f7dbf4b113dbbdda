//! Commit statuses: a build started by a forge's push reports back to that
//! forge — pending when requested, then success or failure — with a link
//! to the build, when the forge's `[hooks.*]` has a `status_token`. Sent
//! from tasks of their own; a forge that is down never holds up a build.

use crate::shared::Shared;
use kiln_core::config::ForgeHook;
use kiln_core::props::PropertySource;
use kiln_core::BuildState;
use kiln_db::BuildRow;
use std::sync::Arc;
use std::time::Duration;

struct Target {
    forge: String,
    hook: ForgeHook,
    project: String,
    revision: String,
}

fn target_of(shared: &Shared, b: &BuildRow) -> Option<Target> {
    // Only where an authenticated forge hook or the poller said the change
    // came from: a user can give any property with a request, and must not
    // make the farm post statuses with its forge token to a repository of
    // their choosing. The revision is the change's too: what a worker says
    // it checked out (`got_revision`) does not choose the commit.
    let prop = |k: &str| b.properties.get(k).filter(|p| p.source == PropertySource::Change).map(|p| p.value.clone());
    let forge = prop("change_source")?;
    let farm = shared.farm();
    let hook = match forge.as_str() {
        "github" => farm.cfg.hooks.github.clone(),
        "gitlab" => farm.cfg.hooks.gitlab.clone(),
        "gitea" => farm.cfg.hooks.gitea.clone(),
        _ => None,
    }?;
    hook.status_token.as_ref()?;
    let project = prop("project")?;
    let revision = prop("revision")?;
    // Both come from a checked payload, but they go into a URL path.
    let safe = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) && !s.contains("..")
    };
    (safe(&project) && kiln_core::config::check_revision(&revision).is_ok()).then_some(Target {
        forge,
        hook,
        project,
        revision,
    })
}

/// Reports every build of a new request as pending.
pub fn request_created(shared: &Arc<Shared>, builds: &[BuildRow]) {
    for row in builds {
        let (shared, row) = (shared.clone(), row.clone());
        tokio::spawn(async move { send(&shared, &row, None).await });
    }
}

/// Reports a build's end.
pub fn build_finished(shared: &Arc<Shared>, row: &BuildRow) {
    if !row.properties.contains_key("change_source") {
        return;
    }
    let shared = shared.clone();
    let row = row.clone();
    tokio::spawn(async move { send(&shared, &row, Some(row.state)).await });
}

async fn send(shared: &Arc<Shared>, b: &BuildRow, end: Option<BuildState>) {
    let Some(t) = target_of(shared, b) else { return };
    let farm = shared.farm();
    let Some(token_ref) = &t.hook.status_token else { return };
    let token = match farm.secret(token_ref, &format!("[hooks.{}] status_token", t.forge)) {
        Ok(tok) => tok,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the status token; no commit status sent");
            return;
        }
    };
    let link = format!("{}/builds/{}", farm.cfg.master.public_url(), b.id);
    let context = format!("kiln/{}/{}", b.component, b.target);
    let description = match end {
        None => "queued".to_string(),
        Some(BuildState::Succeeded) => "succeeded".to_string(),
        Some(s) => match &b.reason {
            Some(r) => format!("{}: {}", s.as_str(), r.chars().take(120).collect::<String>()),
            None => s.as_str().to_string(),
        },
    };
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(15)).user_agent("kiln").build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make an HTTP client for commit statuses");
            return;
        }
    };
    let req = match t.forge.as_str() {
        "gitlab" => {
            let state = match end {
                None => "pending",
                Some(BuildState::Succeeded) => "success",
                Some(BuildState::Cancelled | BuildState::Skipped) => "canceled",
                Some(_) => "failed",
            };
            let api = t.hook.api_url.as_deref().unwrap_or("https://gitlab.com");
            let project: String = t.project.replace('/', "%2F");
            http.post(format!("{api}/api/v4/projects/{project}/statuses/{}", t.revision))
                .header("PRIVATE-TOKEN", token)
                .query(&[("state", state), ("name", &context), ("target_url", &link), ("description", &description)])
        }
        forge => {
            let state = match end {
                None => "pending",
                Some(BuildState::Succeeded) => "success",
                Some(BuildState::Failed) => "failure",
                Some(_) => "error",
            };
            let body =
                serde_json::json!({"state": state, "target_url": link, "description": description, "context": context});
            let (url, auth) = if forge == "github" {
                let api = t.hook.api_url.as_deref().unwrap_or("https://api.github.com");
                (format!("{api}/repos/{}/statuses/{}", t.project, t.revision), format!("Bearer {token}"))
            } else {
                let api = t.hook.api_url.as_deref().unwrap_or_default();
                (format!("{api}/api/v1/repos/{}/statuses/{}", t.project, t.revision), format!("token {token}"))
            };
            http.post(url).header("authorization", auth).header("accept", "application/vnd.github+json").json(&body)
        }
    };
    let name = format!("{} commit status of build {}", t.forge, b.id);
    super::outbound::retry(&name, "commit status", || super::outbound::send_http(req.try_clone())).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{Tester, FARM};
    use kiln_core::props::Property;

    fn build_with(source: PropertySource) -> BuildRow {
        let mut properties = kiln_core::props::Properties::new();
        for (k, v) in [("change_source", "github"), ("project", "grace/mono"), ("revision", &"a".repeat(40))] {
            properties.insert(k.into(), Property { value: v.to_string(), source });
        }
        BuildRow {
            id: 1,
            request_id: 1,
            component: "pkg".into(),
            target: "debian-12-amd64".into(),
            state: BuildState::Queued,
            reason: None,
            requested_at: 0,
            started_at: None,
            finished_at: None,
            requested_by: None,
            worker: None,
            attempt: 0,
            properties,
            depends_on: Vec::new(),
        }
    }

    #[tokio::test]
    async fn statuses_go_only_where_a_forge_said_the_change_came_from() {
        let config = format!("{FARM}\n[hooks.github]\nsecret_file = \"gh.secret\"\nstatus_token_file = \"gh.token\"\n");
        let t = Tester::with_config(&config).await;
        let from_hook = target_of(&t.shared, &build_with(PropertySource::Change)).expect("a hook's change");
        assert_eq!((from_hook.forge.as_str(), from_hook.project.as_str()), ("github", "grace/mono"));
        // The same properties given by a user with their request: no status.
        assert!(target_of(&t.shared, &build_with(PropertySource::Request)).is_none());
        // What a worker says it checked out does not move the status.
        let mut checked_out = build_with(PropertySource::Change);
        checked_out
            .properties
            .insert("got_revision".into(), Property { value: "b".repeat(40), source: PropertySource::Step });
        assert_eq!(target_of(&t.shared, &checked_out).expect("still the hook's").revision, "a".repeat(40));
    }
}
