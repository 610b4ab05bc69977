//! Panics in handlers become a generic 500; the message and location go to logs and telemetry.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Once;

use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

thread_local! {
    // The hook runs on the panicking thread just before unwinding reaches the catch layer on
    // that same thread, so a thread-local carries the location across.
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records where each panic happened (the payload alone does not say). Installed once.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The previous hook (by default, the message on stderr) still runs: panics outside
        // requests must stay visible even without a log subscriber.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "unknown location".to_owned());
            tracing::error!(location, message = %payload_text(info.payload()), "panic");
            LAST_LOCATION.with(|last| *last.borrow_mut() = Some(location));
            previous(info);
        }));
    });
}

/// The 500 for a panic caught in a request (`guarded` in [`crate::http`]).
pub fn to_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let location = LAST_LOCATION
        .with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| "unknown location".to_owned());
    ApiError::internal(format!(
        "panic at {location}: {}",
        payload_text(payload.as_ref())
    ))
    .into_response()
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}
