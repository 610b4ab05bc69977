//! Panics in handlers become a generic 500; the message and location go to logs and telemetry.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::sync::Once;

use axum::response::{IntoResponse, Response};

use crate::config::LogFormat;
use crate::error::ApiError;

thread_local! {
    // The hook runs on the panicking thread just before unwinding reaches the catch layer on
    // that same thread, so a thread-local carries the location across.
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records where each panic happened (the payload alone does not say), and logs it. Installed
/// once, by the first application built in the process.
///
/// With text logs the previous hook (by default, the message and any backtrace on stderr) still
/// runs: panics outside requests stay visible even without a log subscriber. With JSON logs it
/// does not, since its plain text would break the one-object-per-line stream; the log event
/// carries the backtrace instead when `RUST_BACKTRACE` asks for one.
pub fn install_hook(format: LogFormat) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "unknown location".to_owned());
            let payload = payload_text(info.payload());
            match format {
                LogFormat::Text => {
                    tracing::error!(location, payload, "panic");
                    previous(info);
                }
                LogFormat::Json => {
                    let backtrace = Backtrace::capture();
                    if backtrace.status() == BacktraceStatus::Captured {
                        tracing::error!(location, payload, backtrace = %backtrace, "panic");
                    } else {
                        tracing::error!(location, payload, "panic");
                    }
                }
            }
            LAST_LOCATION.with(|last| *last.borrow_mut() = Some(location));
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
