//! The Functions side of the handler: the routes as the Functions host must see them
//! ([`RouteInfo`]), the `function.json` model and `handler functions check` ([`check`]), which
//! keeps the function folders and the Router in agreement with the host's routing rule
//! simulated ([`routing`]), and the custom-handler invocation payload of non-HTTP functions
//! ([`invocation`]).

pub mod check;
pub mod invocation;
pub mod routing;

/// Where a route may be hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosting {
    /// Reachable through a Functions HTTP function.
    Functions,
    /// Served by the handler only when it runs on its own (not through the Functions host).
    StandaloneOnly,
    /// Called by the Functions host itself, not through an HTTP function (readiness probe).
    Host,
    /// The host's invocation payload for a non-HTTP function (`POST /<function name>`).
    Invocation,
}

/// One route the Router serves, as `handler functions check` compares it with the function
/// folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Path template as the Router spells it, e.g. `/api/orders/{id}`.
    pub path: String,
    /// Upper-case methods.
    pub methods: Vec<String>,
    pub hosting: Hosting,
    /// Needs no token (and no function key).
    pub anonymous: bool,
}
