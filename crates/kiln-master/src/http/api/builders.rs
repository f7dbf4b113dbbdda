//! The farm's shape and health: `/api/v1/status` and `/api/v1/builders`
//! (component × target with last result and queue).

use crate::http::ApiError;
use crate::shared::Shared;
use axum::extract::State;
use axum::Json;
use kiln_core::matrix;
use kiln_proto::api::{BuilderInfo, Status};
use std::collections::HashMap;
use std::sync::Arc;

type AppState = Arc<Shared>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// The master's version and config generation.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, body = Status)))]
pub async fn status(State(s): State<AppState>) -> ApiResult<Status> {
    let connected = crate::ops::workers::list(&s).await.values().filter(|w| w.connected).count() as i64;
    let farm = s.farm();
    let (queued, running) = s.store.queue_counts().await?;
    let masters = crate::ops::workers::masters(&s).await?;
    Ok(Json(Status {
        master: s.store.owner().map(str::to_string),
        masters,
        builds_queued: queued,
        builds_running: running,
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_generation: s.generation(),
        builders: matrix::builders(&farm.cfg).count() as i64,
        workers_connected: connected,
        disk: crate::ops::disk::status(&s),
    }))
}

/// Every builder (component × target) with its last result and queue.
#[utoipa::path(get, path = "/api/v1/builders", responses((status = 200, body = [BuilderInfo])))]
pub async fn builders(State(s): State<AppState>) -> ApiResult<Vec<BuilderInfo>> {
    let workers = crate::ops::workers::list(&s).await;
    let farm = s.farm();
    let stats: HashMap<(String, String), kiln_db::BuilderStats> =
        s.store.builder_stats().await?.into_iter().map(|b| ((b.component.clone(), b.target.clone()), b)).collect();
    let out = matrix::builders(&farm.cfg)
        .map(|b| {
            let st = stats.get(&(b.component.name.clone(), b.target.name.clone()));
            BuilderInfo {
                component: b.component.name.clone(),
                target: b.target.name.clone(),
                family: b.target.family.to_string(),
                last_build_id: st.map(|x| x.last_build_id),
                last_state: st.map(|x| x.last_state),
                queued: st.map_or(0, |x| x.queued),
                running: st.map_or(0, |x| x.running),
                workers: workers
                    .values()
                    .filter(|w| w.connected && w.targets.contains(&b.target.name))
                    .map(|w| w.name.clone())
                    .collect(),
            }
        })
        .collect();
    Ok(Json(out))
}
