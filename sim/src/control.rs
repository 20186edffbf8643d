//! HTTP/JSON control API (one per fleet, on its own port). Endpoints are
//! documented in `sim/README.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::device::StatePatch;
use crate::faults::FaultSpec;
use crate::handle::{DeviceHandle, FleetError, FleetInner};
use crate::journal::JournalQuery;

type S = Arc<FleetInner>;

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        let code = match &e {
            FleetError::Invalid(m) if m.starts_with("no device") => StatusCode::NOT_FOUND,
            FleetError::Domain(crate::error::DomainError::NotFound(_)) => StatusCode::NOT_FOUND,
            FleetError::Domain(crate::error::DomainError::FailedPrecondition(_))
            | FleetError::Domain(crate::error::DomainError::Unavailable(_)) => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

type R<T> = Result<T, ApiError>;

fn dev(s: &S, name: &str) -> R<DeviceHandle> {
    s.get(name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no device named {name}")))
}

/// The router.
pub(crate) fn router(state: S) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/devices", get(list_devices))
        .route("/devices/{name}", get(get_device).patch(patch_device))
        .route("/devices/{name}/reboot", post(reboot))
        .route("/devices/{name}/commit", post(commit))
        .route(
            "/devices/{name}/faults",
            get(device_faults).post(device_inject).delete(device_clear),
        )
        .route("/devices/{name}/faults/{id}", delete(device_remove))
        .route(
            "/devices/{name}/journal",
            get(device_journal).delete(device_journal_clear),
        )
        .route("/faults", get(all_faults).post(inject).delete(clear_all))
        .route("/journal", get(journal).delete(journal_clear))
        .with_state(state)
}

async fn ready(State(s): State<S>) -> impl IntoResponse {
    Json(s.ready())
}

async fn list_devices(State(s): State<S>) -> impl IntoResponse {
    Json(s.handles().iter().map(|h| h.snapshot()).collect::<Vec<_>>())
}

async fn get_device(State(s): State<S>, Path(name): Path<String>) -> R<impl IntoResponse> {
    Ok(Json(dev(&s, &name)?.snapshot()))
}

async fn patch_device(
    State(s): State<S>,
    Path(name): Path<String>,
    Json(p): Json<StatePatch>,
) -> R<impl IntoResponse> {
    Ok(Json(dev(&s, &name)?.apply(p)?))
}

#[derive(Deserialize, Default)]
struct RebootBody {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    reason: Option<String>,
}

async fn reboot(
    State(s): State<S>,
    Path(name): Path<String>,
    body: Option<Json<RebootBody>>,
) -> R<impl IntoResponse> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let d = dev(&s, &name)?;
    d.reboot(
        Duration::from_millis(b.delay_ms),
        b.reason.as_deref().unwrap_or("control API"),
    )?;
    Ok((StatusCode::ACCEPTED, Json(d.snapshot())))
}

async fn commit(State(s): State<S>, Path(name): Path<String>) -> R<impl IntoResponse> {
    let d = dev(&s, &name)?;
    d.commit();
    Ok(Json(d.snapshot()))
}

async fn device_faults(State(s): State<S>, Path(name): Path<String>) -> R<impl IntoResponse> {
    Ok(Json(dev(&s, &name)?.faults()))
}

async fn device_inject(
    State(s): State<S>,
    Path(name): Path<String>,
    Json(f): Json<FaultSpec>,
) -> R<impl IntoResponse> {
    let id = dev(&s, &name)?.inject(f)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "device": name, "id": id })),
    ))
}

async fn device_clear(State(s): State<S>, Path(name): Path<String>) -> R<impl IntoResponse> {
    dev(&s, &name)?.clear_faults();
    Ok(StatusCode::NO_CONTENT)
}

async fn device_remove(
    State(s): State<S>,
    Path((name, id)): Path<(String, u64)>,
) -> R<impl IntoResponse> {
    if dev(&s, &name)?.remove_fault(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no fault {id} on {name}"),
        ))
    }
}

async fn device_journal(
    State(s): State<S>,
    Path(name): Path<String>,
    Query(mut q): Query<JournalQuery>,
) -> R<impl IntoResponse> {
    dev(&s, &name)?;
    q.device = Some(name);
    Ok(Json(s.journal.entries(&q)))
}

async fn device_journal_clear(
    State(s): State<S>,
    Path(name): Path<String>,
) -> R<impl IntoResponse> {
    dev(&s, &name)?.clear_journal();
    Ok(StatusCode::NO_CONTENT)
}

async fn all_faults(State(s): State<S>) -> impl IntoResponse {
    let all: Vec<_> = s.handles().iter().flat_map(|h| h.faults()).collect();
    Json(all)
}

async fn inject(State(s): State<S>, Json(f): Json<FaultSpec>) -> R<impl IntoResponse> {
    let ids = s.inject(f)?;
    let out: Vec<_> = ids
        .into_iter()
        .map(|(d, id)| json!({ "device": d, "id": id }))
        .collect();
    Ok((StatusCode::CREATED, Json(out)))
}

async fn clear_all(State(s): State<S>) -> impl IntoResponse {
    for h in s.handles() {
        h.clear_faults();
    }
    StatusCode::NO_CONTENT
}

async fn journal(State(s): State<S>, Query(q): Query<JournalQuery>) -> impl IntoResponse {
    Json(s.journal.entries(&q))
}

#[derive(Deserialize)]
struct ClearQ {
    device: Option<String>,
}

async fn journal_clear(State(s): State<S>, Query(q): Query<ClearQ>) -> impl IntoResponse {
    s.journal.clear(q.device.as_deref());
    StatusCode::NO_CONTENT
}
