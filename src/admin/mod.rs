//! The HTTP admin API (JSON under `/v1`) and `/metrics`.
//!
//! Handlers validate, hand every change to the registrar (which applies,
//! announces, logs and counts it), read the registry, and render; they hold
//! no state of their own. [`router`] builds the whole API so tests can serve it anywhere.

mod auth;
mod body;
mod error;
mod events;
mod filters;
mod openapi;
mod serve;
mod state;
pub(crate) mod tls;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

pub(crate) use error::ApiError;
pub(crate) use serve::{Limits, serve};
pub(crate) use state::AdminState;

use filters::parse_filters;

use crate::access::Caller;
use crate::events::DeregisterReason;
use crate::registrar::RegistrarError;
use crate::select::{self, Ask, Order};
use crate::service::{Health, MAX_OUTPUT_BYTES, Registration, ValidRegistration, validate_label};

/// The whole admin API.
pub(crate) fn router(state: AdminState) -> Router {
    let state = Arc::new(state);
    let mut api = Router::new()
        .route("/v1/services", post(register).get(list))
        .route("/v1/services/{id}", get(get_one).delete(deregister))
        .route("/v1/services/{id}/heartbeat", put(heartbeat))
        .route("/v1/discover/{service_type}", get(discover))
        .route("/v1/types", get(types))
        .route("/v1/events", get(events::stream))
        .route("/metrics", get(metrics));
    // Without a token there is nothing to check: no layer at all, rather
    // than one that runs (and boxes a future) on every request; handlers
    // then see `Caller::Anyone`. The layer covers the routes above only:
    // those below are open whatever the tokens (README "Security").
    if !state.tokens.is_empty() {
        api = api.layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    }
    api
        // Open for probes.
        .route("/v1/health", get(health))
        // Static files that hold no data.
        .route("/v1/openapi.json", get(openapi::document))
        .merge(ui::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// The one parameter of a path (`{id}`, `{service_type}`); one that is
/// not valid UTF-8 (after percent-decoding) is answered 400 with the JSON
/// error body, as every other error is, not axum's plain text.
struct PathParam(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<PathParam, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("no service with id {id:?}")))
}

fn unknown_id(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no service with id {id}, or it has expired"))
}

async fn register(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(limiter) = &state.registrations_limiter
        && limiter.check(peer.ip(), state.registry.now_ms().div_ceil(1000) as u32)
            != crate::limit::Verdict::Answer
    {
        state.metrics.registrations_limited.inc();
        return Err(ApiError::RateLimited(
            "too many registrations from your address this second \
             (registry.registrations_per_source); try again in a second"
                .into(),
        ));
    }
    let outcome = async {
        let bytes = body::read_body(body, state.body_read_timeout).await?;
        registration_from_body(&headers, &bytes, state.default_ttl)
    }
    .await;
    let spec = match outcome {
        Ok(spec) => spec,
        Err(error) => {
            state.metrics.registrations_rejected.inc();
            return Err(error);
        }
    };
    if let Some((field, address)) = spec.check.as_ref().and_then(|c| c.target.literal_address())
        && let Err(refused) = state.check_targets.check(address)
    {
        state.metrics.registrations_rejected.inc();
        return Err(ApiError::Invalid(format!("{field}: {refused}")));
    }
    if takes_nameserver_name(&state.nameserver_labels, &spec) {
        state.metrics.registrations_rejected.inc();
        let name = state.nameserver_labels.join(".");
        return Err(ApiError::Invalid(format!(
            "type {:?} (with name {:?}) would take over the zone's name server name {name:?} \
             (dns.nameserver): pick another",
            spec.service_type, spec.name
        )));
    }
    let registered = state.registrar.register(spec, &caller).await?;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(registered.instance.view())).into_response())
}

/// The registration a request body holds, parsed and validated: 415, 400
/// or 422 as [`body::parse_json`] and `Registration::validate` say. What
/// the `registration_body` fuzz target runs.
pub(crate) fn registration_from_body(
    headers: &HeaderMap,
    bytes: &[u8],
    default_ttl: u32,
) -> Result<ValidRegistration, ApiError> {
    let registration: Registration = body::parse_json(headers, bytes)?;
    registration
        .validate(default_ttl)
        .map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Whether `spec`'s DNS name is the name server's (`labels`, left of the
/// apex): `<type>` for a one-label name server, `<name>.<type>` for two.
fn takes_nameserver_name(labels: &[String], spec: &ValidRegistration) -> bool {
    match labels {
        [service_type] => spec.service_type == *service_type,
        [name, service_type] => spec.name == *name && spec.service_type == *service_type,
        _ => false,
    }
}

/// Optional heartbeat body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    #[serde(default = "default_status")]
    status: Health,
    output: Option<String>,
}

fn default_status() -> Health {
    Health::Passing
}

async fn heartbeat(
    State(state): State<Arc<AdminState>>,
    PathParam(id): PathParam,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let bytes = body::read_body(body, state.body_read_timeout).await?;
    let beat = if bytes.iter().all(u8::is_ascii_whitespace) {
        HeartbeatBody {
            status: Health::Passing,
            output: None,
        }
    } else {
        body::parse_json::<HeartbeatBody>(&headers, &bytes)?
    };
    if beat
        .output
        .as_ref()
        .is_some_and(|o| o.len() > MAX_OUTPUT_BYTES)
    {
        return Err(ApiError::Invalid(format!(
            "output must be at most {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    match state
        .registrar
        .heartbeat(id, beat.status, beat.output, &caller)
        .await
    {
        Ok(instance) => Ok(Json(instance.view()).into_response()),
        Err(RegistrarError::NotFound) => Err(unknown_id(id)),
        Err(error) => Err(error.into()),
    }
}

async fn deregister(
    State(state): State<Arc<AdminState>>,
    PathParam(id): PathParam,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    state
        .registrar
        .deregister(id, DeregisterReason::Api, &caller)
        .await
        .map_err(|error| match error {
            RegistrarError::NotFound => unknown_id(id),
            error => error.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_one(
    State(state): State<Arc<AdminState>>,
    PathParam(id): PathParam,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let instance = state.registry.get(id).ok_or_else(|| unknown_id(id))?;
    Ok(Json(instance.view_for(caller.may_write(&instance))).into_response())
}

async fn list(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let filters = parse_filters(query, &["type", "tag", "health"])?;
    let now = state.registry.now_ms();
    // One type's snapshot when filtered by type, not the whole registry.
    let candidates = match &filters.service_type {
        Some(service_type) => state.registry.list_type(service_type),
        None => state.registry.list(),
    };
    let services: Vec<_> = candidates
        .into_iter()
        .filter(|i| filters.tag.as_ref().is_none_or(|t| i.has_tag(t)))
        .filter(|i| match filters.health {
            None => true,
            // "passing" means what DNS would serve: passing or warning.
            Some(Health::Passing) => i.is_serving(now),
            Some(health) => i.health() == health,
        })
        .collect();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        services_body(services, caller),
    )
        .into_response())
}

/// Services listed per chunk of the response body.
const SERVICES_PER_CHUNK: usize = 256;

/// `{"services":[…]}`, rendered a chunk of services at a time as the
/// client reads: listing a million instances holds one chunk of JSON in
/// memory, where rendering the whole answer first took several times its
/// size (3.8 GiB at peak for 1 M instances), and the worker thread gets
/// back to other requests between chunks.
fn services_body(services: Vec<Arc<crate::service::Instance>>, caller: Caller) -> Body {
    use futures_util::stream::{self, StreamExt};
    let count = services.len();
    let chunks = (0..count).step_by(SERVICES_PER_CHUNK).map(move |start| {
        let end = (start + SERVICES_PER_CHUNK).min(count);
        let mut out = Vec::with_capacity(512 * (end - start));
        for (at, instance) in services[start..end].iter().enumerate() {
            if start + at > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &instance.view_for(caller.may_write(instance)))
                .expect("a service view always serialises");
        }
        bytes::Bytes::from(out)
    });
    let parts = stream::once(std::future::ready(bytes::Bytes::from_static(
        br#"{"services":["#,
    )))
    .chain(stream::iter(chunks))
    .chain(stream::once(std::future::ready(bytes::Bytes::from_static(
        b"]}",
    ))))
    .map(Ok::<_, std::convert::Infallible>);
    Body::from_stream(parts)
}

async fn discover(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParam(service_type): PathParam,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let filters = parse_filters(query, &["tag", "locality"])?;
    let service_type =
        validate_label("type", &service_type).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let steering = &state.steering;
    let locality = match &filters.locality {
        Some(locality) => Some(locality.as_str()),
        None => steering.locality_of(peer.ip()),
    };
    let none = || ApiError::NotFound(format!("no serving instance of type {service_type:?}"));
    let set = state.registry.type_set(&service_type).ok_or_else(none)?;
    // What the first address of an A answer would be: the lowest priority
    // serving, the caller's locality first, by weight.
    let ask = Ask {
        tag: filters.tag.as_deref(),
        family: None,
        order: Order::Failover,
        locality,
    };
    let now = state.registry.now_ms();
    let selection = select::select(&set, &ask, steering, now, DISCOVERY_SAMPLE);
    let chosen = selection.instances.first().ok_or_else(none)?;
    Ok(Json(chosen.view_for(caller.may_write(chosen))).into_response())
}

/// Candidates a discovery of a large type weighs, from a random start.
const DISCOVERY_SAMPLE: usize = 16;

async fn types(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    // Exact at this moment (a lapsed instance is gone before the sweep
    // removes it), so a pass over the instances; `/v1/health` and
    // `/metrics` count from the indexes instead.
    let now = state.registry.now_ms();
    let types: Vec<_> = state
        .registry
        .types()
        .into_iter()
        .filter_map(|(service_type, set)| {
            let live: Vec<_> = set.iter().filter(|i| now < i.expires_at_ms()).collect();
            let serving = live.iter().filter(|i| i.is_serving(now)).count();
            (!live.is_empty()).then(
                || json!({ "type": service_type, "instances": live.len(), "serving": serving }),
            )
        })
        .collect();
    Json(json!({ "types": types }))
}

/// 200 "ok", or 503 "degraded" with the reason while a shared store (etcd)
/// cannot be seen: DNS and reads still answer from memory, writes fail.
async fn health(State(state): State<Arc<AdminState>>) -> Response {
    let now = state.registry.now_ms();
    // Running counts kept by the registry: O(1), so that probes looping on
    // it cost nothing that grows with the registry.
    let counts = state.registry.counts();
    let mut body = json!({
        "status": "ok",
        "timestamp": now / 1000,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "store": state.store,
        "instances": counts.instances,
        "serving": counts.not_critical,
    });
    match state.registrar.store_problem() {
        None => Json(body).into_response(),
        Some(problem) => {
            body["status"] = json!("degraded");
            body["reason"] = json!(format!(
                "store {} cannot be seen ({problem}): writes fail, DNS and reads answer from memory, nothing expires",
                state.store
            ));
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state
                .metrics
                .render(&state.registry, state.registrar.subscribers());
            let degraded = state.registrar.store_problem().is_some();
            crate::metrics::render_store_degraded(&mut text, degraded);
            text
        },
    )
        .into_response()
}
