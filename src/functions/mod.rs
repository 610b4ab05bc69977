//! The Functions side of the handler: the `function.json` model and `handler functions check`,
//! which keeps the function folders and the Router in agreement, with the host's routing rule
//! simulated; and the invocation payload of non-HTTP functions.

pub mod check;
pub mod invocation;
pub mod routing;
