//! A client of signpost's admin API, for programs that register
//! themselves, keep themselves alive and find others; the `signpost`
//! command line (`register`, `list`, `run`, …) is built on it.
//!
//! - [`Client`]: one method per API call ([`Client::register_once`],
//!   [`Client::heartbeat`], [`Client::deregister`], [`Client::list`],
//!   [`Client::discover`], [`Client::types`], [`Client::health`]).
//! - [`Client::register`] returns a [`Registration`] that heartbeats in the
//!   background every third of the TTL, registers again when the registry
//!   has forgotten it (a heartbeat answered 404), waits longer between
//!   attempts while the registry is away, and deregisters on
//!   [`Registration::close`] (and, best effort, when dropped).
//! - [`Client::events`]: the event stream, reconnecting by itself, with an
//!   [`Event::Resync`] carrying the full state whenever events may have
//!   been missed (this subscriber lagged, or the connection broke).
//! - Every failure is one [`Error`]: [`Error::Refused`] (with the server's
//!   message), [`Error::Unreachable`], or [`Error::BadResponse`].
//! - [`blocking`]: the same for programs without a tokio runtime.
//!
//! It speaks HTTP/1.1 with hyper, the stack the server already uses: one
//! connection per request, each bounded by the client's timeout (10 s by
//! default).
//!
//! # Async
//!
//! ```no_run
//! use signpost::client::{Client, Filter, NewService};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8700")?;
//! // Registered now, heartbeating every ttl/3 in the background.
//! let registration = client
//!     .register(NewService::new("web-1", "web", "10.0.0.5", 8080).ttl(10).tag("api"))
//!     .await?;
//! println!("registered as {:?}", registration.id());
//!
//! // Find others.
//! let db = client.discover("db", None).await?;
//! println!("a database: {}:{}", db.host, db.port);
//! for service in client.list(&Filter::of_type("web")).await? {
//!     println!("{} {} {}", service.name, service.host, service.health);
//! }
//!
//! // Leave.
//! registration.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Blocking
//!
//! ```no_run
//! use signpost::client::blocking::Client;
//! use signpost::client::{Event, NewService};
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_env()?; // SIGNPOST_ADDR, SIGNPOST_ADMIN_TOKEN
//! let registration = client.register(NewService::new("worker-1", "worker", "10.0.0.9", 9000))?;
//! let found = client.discover("worker", None)?;
//! assert_eq!(Some(found.id), registration.id());
//!
//! for event in client.events(Some("worker"))?.take(3) {
//!     match event? {
//!         Event::Change(change) => println!("{} {:?}", change.kind.as_str(), change.service),
//!         Event::Resync(resync) => println!("missed events; now {:?}", resync.services),
//!         _ => {}
//!     }
//! }
//! registration.close()?;
//! # Ok(())
//! # }
//! ```

mod address;
mod api;
mod backoff;
pub mod blocking;
mod error;
mod events;
mod http;
mod keep_alive;

pub use address::Address;
pub use api::{
    ADDRESS_VAR, Check, Client, Filter, NewService, ServerHealth, TOKEN_VAR, TypeSummary,
};
pub use error::{AddressError, Error};
pub use events::{Change, ChangeKind, Event, Events, Resync, ResyncCause};
pub use keep_alive::{Registration, Reporter};

pub use crate::service::{Health, ServiceView};
