//! What the last panic of a manager server's connection thread said, for the error the caller
//! gets (`Error::RemotePanic`).

use std::cell::RefCell;

thread_local! {
    /// The last panic of this thread: message and location.
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The name of the threads that serve connections; only their panics are recorded.
pub(crate) const CONNECTION_THREAD: &str = "mp-manager-conn";

/// The message and location of this thread's last panic.
pub(crate) fn take() -> (String, String) {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| ("panic".into(), "<unknown>".into()))
}

/// Records panics of the server's connection threads for the caller, and prints them; other
/// threads keep the hook they had.
pub(crate) fn install_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(CONNECTION_THREAD) {
            return previous(info);
        }
        let message = crate::process::worker_child::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "<unknown>".into());
        crate::sys::stderr_line(&format!(
            "mp: a managed method panicked at {location}: {message} (the manager keeps serving)"
        ));
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
    }));
}
