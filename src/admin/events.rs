//! `GET /v1/events`: the event stream as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::filters::parse_filters;
use super::state::AdminState;
use crate::access::Caller;
use crate::events::lagged;

/// Streams every event (or those of `?type=`) until the client leaves or
/// the server shuts down. The subscription exists once the response headers
/// are sent, so a client that has them will see every later change.
pub(super) async fn stream(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let filters = parse_filters(query, &["type"])?;
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        state.metrics.events_refused.inc();
        return Err(ApiError::Busy(
            "too many /v1/events streams are open (admin.events_max_streams); try again later"
                .into(),
        ));
    };
    let receiver = state.registrar.subscribe();
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let service_type = filters.service_type;
    // The permit lives in the stream's state: freed when the stream ends.
    let events = futures_util::stream::unfold((receiver, permit), move |(mut receiver, permit)| {
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        let service_type = service_type.clone();
        let caller = caller.clone();
        async move {
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    received = receiver.recv() => received,
                };
                let event = match received {
                    Ok(event) => {
                        if service_type
                            .as_ref()
                            .is_some_and(|t| *t != event.service_type)
                        {
                            continue;
                        }
                        let may_write =
                            caller.may_write_owned(event.owner.as_deref(), &event.service_type);
                        Event::default().data(event.json_for(may_write))
                    }
                    Err(RecvError::Lagged(missed)) => {
                        metrics.events_missed.add(missed);
                        Event::default().data(lagged(missed))
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(event), (receiver, permit)));
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(state.events_keep_alive)
                .text("keep-alive"),
        )
        .into_response())
}
