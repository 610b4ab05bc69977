//! Orders API: an Azure Functions custom handler that gets every HTTP status code right.
//!
//! `app::router` builds the whole service from a [`config::Config`]; `main.rs` only reads
//! settings, binds and serves. Tests build the same router and speak HTTP to it.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod exports;
pub mod functions;
pub mod http;
pub mod openapi;
pub mod routes;
pub mod store;
pub mod telemetry;
