//! Integration tests: one binary (it links once), one module per area.
//! Every test starts the real server on port 0 and talks to it over real
//! UDP, TCP and HTTP.

mod support;

mod admin;
mod admin_limits;
mod checks;
mod cli;
mod client;
mod commands;
mod dns;
mod events;
mod forward;
mod fuzz;
mod hardening;
mod lifetime;
mod limits;
mod live;
mod nameserver;
mod run;
mod steering;
mod store;
