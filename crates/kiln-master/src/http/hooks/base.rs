//! Buildbot's base change hook (`/change_hook/base`), compatible with
//! `post_build_request.py`: a form naming a `project` (a component, built
//! on all its targets) or a repository, branch and revision (the components
//! that build from it). It needs a token with own_jobs unless
//! `[hooks.base] open = true`.

use crate::caller::Caller;
use crate::http::convert::created;
use crate::http::ApiError;
use crate::ops::requests::NewRequest;
use crate::ops::{self, OpError};
use crate::shared::Shared;
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::{Form, Json};
use kiln_core::matrix::RequestSpec;
use kiln_core::perm::Permission;
use kiln_core::props::{request_properties, PropertySource};
use kiln_proto::api::{BuildRequestCreated, ErrorBody};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Buildbot's base change hook form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BaseChange {
    project: Option<String>,
    repository: Option<String>,
    branch: Option<String>,
    revision: Option<String>,
    author: Option<String>,
    who: Option<String>,
    comments: Option<String>,
    /// A JSON object of properties.
    properties: Option<String>,
    #[allow(dead_code)]
    category: Option<String>,
    #[allow(dead_code)]
    when: Option<String>,
    #[allow(dead_code)]
    revlink: Option<String>,
    /// A JSON list of the paths the change touched.
    files: Option<String>,
    #[allow(dead_code)]
    codebase: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

/// Buildbot's base change hook: builds the component named by `project` on
/// all its targets. Compatible with `post_build_request.py`.
#[utoipa::path(post, path = "/change_hook/base", request_body(content = BaseChange, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = BuildRequestCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no own_jobs permission"), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody, description = "the body is not a form")),
    security(("token" = [])))]
pub async fn change_hook_base(
    State(s): State<Arc<Shared>>,
    caller: Result<Caller, ApiError>,
    form: Result<Form<BaseChange>, FormRejection>,
) -> Result<Json<BuildRequestCreated>, ApiError> {
    // A token with own_jobs, unless the config opens the hook.
    let caller = match caller {
        Ok(c) => c,
        Err(_) if s.farm().cfg.hooks.base_open => Caller::system("anonymous"),
        Err(e) => return Err(e),
    };
    caller.require(Permission::OwnJobs).map_err(OpError::from)?;
    let who = caller.name.clone();
    let Form(change) = form?;
    let project = change.project.clone().filter(|p| !p.is_empty());
    let Some(project) = project else {
        // No project: the components whose git source is this repository and branch.
        let (Some(repository), Some(branch), Some(revision)) = (&change.repository, &change.branch, &change.revision)
        else {
            return Err(ApiError::bad(
                "the change names neither a `project` (a component) nor a `repository`, `branch` and `revision`",
            ));
        };
        kiln_core::config::check_branch(branch).map_err(ApiError::bad)?;
        kiln_core::config::check_revision(revision).map_err(ApiError::bad)?;
        let files = match change.files.as_deref().filter(|f| !f.trim().is_empty()) {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Vec<String>>(text)
                    .map_err(|e| ApiError::bad(format!("`files` is not a JSON list of paths: {e}")))?,
            ),
        };
        let found = kiln_core::change::Change {
            urls: vec![repository.clone()],
            branch: branch.clone(),
            revision: revision.clone(),
            files,
            who: change.author.clone().or(change.who.clone()).filter(|a| !a.is_empty()),
            comments: change.comments.clone().unwrap_or_default().lines().next().unwrap_or("").to_string(),
            project: None,
        };
        let origin = format!("change hook ({who})");
        return match ops::requests::submit_change(&s, &caller, &found, &origin).await? {
            Some(made) => Ok(Json(created(&s, made))),
            None => Err(ApiError::not_found(format!(
                "no component builds from {repository} branch {branch} with these files"
            ))),
        };
    };
    let given: BTreeMap<String, String> = match change.properties.as_deref().filter(|p| !p.trim().is_empty()) {
        None => BTreeMap::new(),
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| ApiError::bad(format!("`properties` is not valid JSON: {e}")))?;
            let obj = v.as_object().ok_or_else(|| ApiError::bad("`properties` must be a JSON object"))?;
            obj.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        }
    };
    let mut properties = request_properties(&given, PropertySource::Request).map_err(OpError::from)?;
    let from_change: BTreeMap<String, String> =
        [("revision", &change.revision), ("branch", &change.branch), ("repository", &change.repository)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (k.to_string(), v.clone())))
            .collect();
    for (k, p) in request_properties(&from_change, PropertySource::Change).map_err(OpError::from)? {
        properties.entry(k).or_insert(p);
    }
    let author = change.author.or(change.who).filter(|a| !a.is_empty());
    let by = match &author {
        Some(a) => format!("{a} (change hook, {who})"),
        None => format!("change hook ({who})"),
    };
    let spec = RequestSpec { components: vec![project], all: false, targets: Vec::new() };
    let req = NewRequest { spec, properties, reason: change.comments };
    let made = ops::requests::submit(&s, &caller.named(by), req).await?;
    Ok(Json(created(&s, made)))
}
