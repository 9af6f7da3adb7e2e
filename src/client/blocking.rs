//! The client for programs without a tokio runtime: the same calls,
//! blocking, on a small runtime of the client's own (one worker thread,
//! which also runs the heartbeats of a [`Registration`]).
//!
//! Do not call these from async code: use [`super::Client`] there.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use uuid::Uuid;

use super::address::Address;
use super::api::{Client as AsyncClient, Filter, NewService, ServerHealth, TypeSummary};
use super::error::{AddressError, Error};
use super::events::{Event, Events as AsyncEvents};
use super::keep_alive::{Registration as AsyncRegistration, Reporter};
use crate::service::{Health, ServiceView};

/// Longest a dropped [`Registration`] waits to deregister.
const DROP_DEREGISTER_WAIT: Duration = Duration::from_secs(2);

/// A blocking client of one signpost admin API; cheap to clone (clones
/// share the runtime).
#[derive(Clone)]
pub struct Client {
    inner: AsyncClient,
    runtime: Arc<Runtime>,
}

fn runtime() -> Arc<Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("signpost-client")
            .enable_all()
            .build()
            .expect("the system can start a thread"),
    )
}

impl Client {
    /// See [`super::Client::new`].
    pub fn new(address: &str) -> Result<Client, AddressError> {
        Ok(Client::wrap(AsyncClient::new(address)?))
    }

    /// See [`super::Client::at`].
    pub fn at(address: Address) -> Client {
        Client::wrap(AsyncClient::at(address))
    }

    /// See [`super::Client::from_env`].
    pub fn from_env() -> Result<Client, AddressError> {
        Ok(Client::wrap(AsyncClient::from_env()?))
    }

    fn wrap(inner: AsyncClient) -> Client {
        Client {
            inner,
            runtime: runtime(),
        }
    }

    /// See [`super::Client::with_token`].
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.inner = self.inner.with_token(token);
        self
    }

    /// See [`super::Client::with_timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.inner = self.inner.with_timeout(timeout);
        self
    }

    /// The admin API's address.
    pub fn address(&self) -> &Address {
        self.inner.address()
    }

    /// See [`super::Client::register`]: registers, then heartbeats on the
    /// client's runtime until [`Registration::close`] or drop.
    pub fn register(&self, service: NewService) -> Result<Registration, Error> {
        let inner = self.runtime.block_on(self.inner.register(service))?;
        Ok(self.handle(inner))
    }

    /// See [`super::Client::keep_registered`].
    pub fn keep_registered(&self, service: NewService) -> Registration {
        let _entered = self.runtime.enter();
        self.handle(self.inner.keep_registered(service))
    }

    fn handle(&self, inner: AsyncRegistration) -> Registration {
        Registration {
            inner: Some(inner),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`super::Client::register_once`].
    pub fn register_once(&self, service: &NewService) -> Result<ServiceView, Error> {
        self.runtime.block_on(self.inner.register_once(service))
    }

    /// See [`super::Client::heartbeat`].
    pub fn heartbeat(
        &self,
        id: Uuid,
        status: Health,
        output: Option<&str>,
    ) -> Result<ServiceView, Error> {
        self.runtime
            .block_on(self.inner.heartbeat(id, status, output))
    }

    /// See [`super::Client::deregister`].
    pub fn deregister(&self, id: Uuid) -> Result<(), Error> {
        self.runtime.block_on(self.inner.deregister(id))
    }

    /// See [`super::Client::service`].
    pub fn service(&self, id: Uuid) -> Result<ServiceView, Error> {
        self.runtime.block_on(self.inner.service(id))
    }

    /// See [`super::Client::list`].
    pub fn list(&self, filter: &Filter) -> Result<Vec<ServiceView>, Error> {
        self.runtime.block_on(self.inner.list(filter))
    }

    /// See [`super::Client::discover`].
    pub fn discover(&self, service_type: &str, tag: Option<&str>) -> Result<ServiceView, Error> {
        self.runtime
            .block_on(self.inner.discover(service_type, tag))
    }

    /// See [`super::Client::types`].
    pub fn types(&self) -> Result<Vec<TypeSummary>, Error> {
        self.runtime.block_on(self.inner.types())
    }

    /// See [`super::Client::health`].
    pub fn health(&self) -> Result<ServerHealth, Error> {
        self.runtime.block_on(self.inner.health())
    }

    /// See [`super::Client::events`]; the events are an iterator.
    pub fn events(&self, service_type: Option<&str>) -> Result<Events, Error> {
        let inner = self.runtime.block_on(self.inner.events(service_type))?;
        Ok(Events {
            inner,
            runtime: self.runtime.clone(),
            refused: false,
        })
    }
}

/// A registration kept alive on the client's runtime; see
/// [`super::Registration`].
#[must_use = "dropping a Registration deregisters it"]
pub struct Registration {
    inner: Option<AsyncRegistration>,
    runtime: Arc<Runtime>,
}

impl Registration {
    fn inner(&self) -> &AsyncRegistration {
        self.inner
            .as_ref()
            .expect("present until closed or dropped")
    }

    /// See [`super::Registration::id`].
    pub fn id(&self) -> Option<Uuid> {
        self.inner().id()
    }

    /// See [`super::Registration::service`].
    pub fn service(&self) -> Option<ServiceView> {
        self.inner().service()
    }

    /// Blocks until the instance is registered.
    pub fn registered(&self) -> ServiceView {
        self.runtime.block_on(self.inner().registered())
    }

    /// See [`super::Registration::report`].
    pub fn report(&self, health: Health, output: Option<String>) {
        self.inner().report(health, output);
    }

    /// See [`super::Registration::reporter`].
    pub fn reporter(&self) -> Reporter {
        self.inner().reporter()
    }

    /// Stops heartbeating and deregisters.
    pub fn close(mut self) -> Result<(), Error> {
        let inner = self.inner.take().expect("present until closed or dropped");
        self.runtime.block_on(inner.close())
    }
}

impl Drop for Registration {
    /// Deregisters, waiting at most 2 s; when dropped inside a runtime
    /// (where it must not block), leaves it to a task instead.
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _entered = self.runtime.enter();
            drop(inner);
            return;
        }
        let _ = self
            .runtime
            .block_on(tokio::time::timeout(DROP_DEREGISTER_WAIT, inner.close()));
    }
}

/// The event stream, as an iterator; see [`super::Events`].
pub struct Events {
    inner: AsyncEvents,
    runtime: Arc<Runtime>,
    refused: bool,
}

impl Events {
    /// See [`super::Events::resync`].
    pub fn resync(mut self, fetch: bool) -> Events {
        self.inner = self.inner.resync(fetch);
        self
    }

    /// Blocks until the next event.
    pub fn next_event(&mut self) -> Result<Event, Error> {
        self.runtime.block_on(self.inner.next())
    }
}

impl Iterator for Events {
    type Item = Result<Event, Error>;

    /// Blocks until the next event; ends after a refusal.
    fn next(&mut self) -> Option<Result<Event, Error>> {
        if self.refused {
            return None;
        }
        let next = self.next_event();
        self.refused = next.is_err();
        Some(next)
    }
}
