//! The test suite: one binary (linking the service and its dependencies once), one module per
//! area. Every test starts the real service (or the real binary) on a loopback port and speaks
//! HTTP to it; `helpers` holds what they share.

mod helpers;

mod answers;
mod auth;
mod azure;
mod binary;
mod delivery;
mod errors;
mod events;
mod expect_continue;
mod exports;
mod flood;
mod input;
mod invocations;
mod layers;
mod limits;
mod load;
mod logs;
mod openapi;
mod orders;
mod status_table;
mod storage;
mod telemetry;
mod telemetry_delivery;
mod telemetry_secrets;
