//! Events for the `tracing` facade, behind the `tracing` cargo feature.
//!
//! Without the feature, [`event!`] expands to nothing: the runtime contains no logging code,
//! and an event's fields are not even evaluated. With it, events go to whatever subscriber the program installed
//! (none: they cost a check of a global flag).
//!
//! What is reported, and at which level (targets are the modules, under `mp_runtime`):
//!
//! | event | level | fields |
//! |---|---|---|
//! | a process started, exited | debug | `pid`, `name`, `method`, `worker`; `exitcode` |
//! | a pool worker started, retired | debug | `pid` |
//! | a pool worker died (with or without a task), was replaced | warn, info | `pid`, `exitcode` |
//! | a pool worker could not be started | warn | `error`, `retry_in` |
//! | the fork server started, was found gone | info, warn | `pid` |
//! | the resource tracker started, was found dead | info, warn | `pid` |
//! | a handshake failed or timed out (listener or client side) | warn | `peer`, `error` |
//!
//! Events only leave processes that have a subscriber: the program's own (and `Fork` children,
//! which inherit it), not the fork server or the tracker, whose lifecycle is therefore reported
//! by the program that starts them. Authentication keys are never part of an event.

/// Emits a `tracing` event at `$level` (`debug`, `info`, `warn`, …) with `tracing`'s field
/// syntax; nothing at all without the `tracing` feature.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        ::tracing::$level!($($arg)+)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {};
}

pub(crate) use event;
