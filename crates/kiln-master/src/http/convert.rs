//! Store rows as the API shows them.

use crate::clock::rfc3339;
use crate::ops::requests::Created;
use crate::shared::Shared;
use kiln_db::{ArtifactRow, BuildRow, StepRow};
use kiln_proto::api::{Artifact, Build, BuildRequestCreated, PropertyValue, Step};
use std::collections::HashMap;

/// A request's builds as the API shows them.
pub fn created(s: &Shared, c: Created) -> BuildRequestCreated {
    BuildRequestCreated {
        request_id: c.request_id,
        builds: c.builds.into_iter().map(|b| to_api_build(s, b, Vec::new(), Vec::new())).collect(),
    }
}

/// Store rows to API objects, with steps and live log sizes.
pub async fn to_api_builds(s: &Shared, rows: Vec<BuildRow>) -> Result<Vec<Build>, kiln_db::StoreError> {
    let ids: Vec<i64> = rows.iter().map(|b| b.id).collect();
    let mut steps: HashMap<i64, Vec<StepRow>> = HashMap::new();
    for st in s.store.steps_of(&ids).await? {
        steps.entry(st.build_id).or_default().push(st);
    }
    let mut artifacts: HashMap<i64, Vec<ArtifactRow>> = HashMap::new();
    for a in s.store.artifacts_of(&ids).await? {
        artifacts.entry(a.build_id).or_default().push(a);
    }
    Ok(rows
        .into_iter()
        .map(|b| {
            let st = steps.remove(&b.id).unwrap_or_default();
            let arts = artifacts.remove(&b.id).unwrap_or_default();
            to_api_build(s, b, st, arts)
        })
        .collect())
}

fn to_api_build(s: &Shared, b: BuildRow, steps: Vec<StepRow>, artifacts: Vec<ArtifactRow>) -> Build {
    let artifacts = artifacts
        .into_iter()
        .map(|a| Artifact {
            url: format!("/api/v1/builds/{}/artifacts/{}", b.id, a.name),
            name: a.name,
            size: a.size as u64,
            sha256: a.sha256,
        })
        .collect();
    let waiting = match b.state {
        kiln_core::BuildState::Queued => s.waiting_of(b.id),
        _ => None,
    };
    Build {
        waiting,
        artifacts,
        id: b.id,
        request_id: b.request_id,
        component: b.component,
        target: b.target,
        state: b.state,
        reason: b.reason,
        requested_at: rfc3339(b.requested_at),
        started_at: b.started_at.map(rfc3339),
        finished_at: b.finished_at.map(rfc3339),
        requested_by: b.requested_by,
        worker: b.worker,
        attempt: b.attempt,
        depends_on: b.depends_on,
        properties: b
            .properties
            .into_iter()
            .map(|(k, p)| (k, PropertyValue { value: p.value, source: p.source }))
            .collect(),
        steps: steps
            .into_iter()
            .map(|st| Step {
                index: st.idx,
                log_size: if st.state.is_finished() { st.log_size } else { s.logs.size(b.id, st.idx as u32) as i64 },
                name: st.name,
                state: st.state,
                exit_code: st.exit_code,
                started_at: st.started_at.map(rfc3339),
                finished_at: st.finished_at.map(rfc3339),
            })
            .collect(),
    }
}
