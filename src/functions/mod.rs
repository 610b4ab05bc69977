//! The Functions side of the handler: the `function.json` model and `handler functions check`,
//! which keeps the function folders and the Router in agreement.

pub mod check;
pub mod invocation;
