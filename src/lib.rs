//! Orders API: an Azure Functions custom handler that gets every HTTP status code right.
//!
//! `app::router` builds the whole service from a [`state::AppState`]; `main.rs` only reads
//! settings, binds and serves. Tests build the same router and speak HTTP to it. The modules are
//! layered (README, "Layout"): each imports only from the layers below it.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod functions;
pub mod http;
pub mod routes;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod worker;
