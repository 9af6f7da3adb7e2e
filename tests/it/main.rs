//! Integration tests: one binary (it links once), one module per area.
//! Every test starts the real server on port 0 and talks to it over real
//! UDP, TCP and HTTP.

mod schema;
mod support;
mod webdriver;

mod access;
mod admin;
mod admin_limits;
mod checks;
mod cli;
mod client;
mod cluster;
mod commands;
mod deploy;
mod dns;
mod events;
mod forward;
mod forwarders;
mod fuzz;
mod hardening;
mod lifetime;
mod limits;
mod live;
mod nameserver;
mod openapi;
mod run;
mod steering;
mod store;
mod ui;
