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
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
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
    category: Option<String>,
    /// When the change was made, in Unix seconds (`when_timestamp` wins).
    when: Option<String>,
    when_timestamp: Option<String>,
    revlink: Option<String>,
    /// A JSON list of the paths the change touched.
    files: Option<String>,
    codebase: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

/// Buildbot's base change hook: builds the component named by `project` on
/// all its targets. Answers 202 as Buildbot does, which is what
/// `post_build_request.py` takes for success.
#[utoipa::path(post, path = "/change_hook/base", request_body(content = BaseChange, content_type = "application/x-www-form-urlencoded"),
    responses((status = 202, body = BuildRequestCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no own_jobs permission"), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody, description = "the body is not a form")),
    security(("token" = [])))]
pub async fn change_hook_base(
    State(s): State<Arc<Shared>>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<BuildRequestCreated>), ApiError> {
    // A token with own_jobs, unless the config opens the hook.
    let caller = match caller {
        Ok(c) => c,
        Err(_) if s.farm().cfg.hooks.base_open => Caller::system("anonymous"),
        Err(e) => return Err(e),
    };
    caller.require(Permission::OwnJobs).map_err(OpError::from)?;
    let who = caller.name.clone();
    let change = read_form(&headers, &body)?;
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
        let files = changed_files(&change)?;
        let found = kiln_core::change::Change {
            urls: vec![repository.clone()],
            branch: branch.clone(),
            revision: revision.clone(),
            files,
            who: change.author.clone().or(change.who.clone()).filter(|a| !a.is_empty()),
            comments: change.comments.clone().unwrap_or_default().lines().next().unwrap_or("").to_string(),
            ..Default::default()
        };
        let origin = format!("change hook ({who})");
        return match ops::requests::submit_change(&s, &caller, &found, &origin).await? {
            Some(made) => Ok((StatusCode::ACCEPTED, Json(created(&s, made)))),
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
    // What Buildbot records of a change, kept as the change's properties.
    let files = changed_files(&change)?.map(|f| f.join("\n"));
    let when = change_time(&change)?;
    let from_change: BTreeMap<String, String> = [
        ("revision", &change.revision),
        ("branch", &change.branch),
        ("repository", &change.repository),
        ("category", &change.category),
        ("codebase", &change.codebase),
        ("revlink", &change.revlink),
        ("files", &files),
        ("when", &when),
    ]
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
    Ok((StatusCode::ACCEPTED, Json(created(&s, made))))
}

/// The form, read strictly: Buildbot answers 400 to bytes that are not
/// UTF-8, where a lenient reader would record `Jos�`. The first of a
/// repeated field counts.
fn read_form(headers: &HeaderMap, body: &[u8]) -> Result<BaseChange, ApiError> {
    if !super::is_form(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the change must be sent as a form (application/x-www-form-urlencoded)",
        ));
    }
    let mut fields = serde_json::Map::new();
    for (name, value) in super::form_fields(body)? {
        fields.entry(name).or_insert(serde_json::Value::String(value));
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| ApiError::bad(format!("the form: {e}")))
}

/// The change's `files`, a JSON list of paths (as the script sends them).
fn changed_files(change: &BaseChange) -> Result<Option<Vec<String>>, ApiError> {
    match change.files.as_deref().filter(|f| !f.trim().is_empty()) {
        None => Ok(None),
        Some(text) => serde_json::from_str::<Vec<String>>(text)
            .map(Some)
            .map_err(|e| ApiError::bad(format!("`files` is not a JSON list of paths: {e}"))),
    }
}

/// The change's time, `when_timestamp` or `when`: Unix seconds (a fraction
/// is dropped), refused when it is anything else.
fn change_time(change: &BaseChange) -> Result<Option<String>, ApiError> {
    let Some(text) = change.when_timestamp.as_deref().or(change.when.as_deref()).map(str::trim) else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(Some(format!("{}", t.trunc() as i64))),
        _ => Err(ApiError::bad(format!("`when` is not a time in Unix seconds: {text:?}"))),
    }
}
