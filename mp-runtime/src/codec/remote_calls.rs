//! Decoding that must not wait on another process.
//!
//! A queue decodes a mid-sized item where it lies in shared memory, with the consumers' lock
//! held (no copy). A value whose decoding calls another process (a manager proxy attaching to its
//! object, a manager handle connecting) must not do that under the lock: a slow or stopped
//! manager would stall every consumer of the queue. Such values call [`before_remote_call`]
//! first. Inside [`without_remote_calls`] that fails the decode and records why, and the caller
//! decodes again from a copy once the lock is released.

use std::cell::Cell;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Remote calls are allowed (everywhere but inside [`without_remote_calls`]).
    Allowed,
    /// Inside [`without_remote_calls`], no remote call asked for yet.
    Refusing,
    /// Inside [`without_remote_calls`], a remote call was refused.
    Refused,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Allowed) };
}

/// What [`without_remote_calls`] made of its closure.
pub(crate) enum Attempt<R> {
    /// The closure ran without asking for a remote call.
    Done(R),
    /// A value asked for a remote call: decode again where calls are allowed.
    Refused,
}

/// Runs `decode` with remote calls refused.
pub(crate) fn without_remote_calls<R>(decode: impl FnOnce() -> R) -> Attempt<R> {
    struct Restore(Mode);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MODE.with(|m| m.replace(Mode::Refusing)));
    let r = decode();
    if MODE.with(Cell::get) == Mode::Refused {
        Attempt::Refused
    } else {
        Attempt::Done(r)
    }
}

/// Called by a `Deserialize` impl before it calls another process: an error (which the caller
/// of [`without_remote_calls`] never shows) where remote calls are refused.
pub(crate) fn before_remote_call<E: serde::de::Error>() -> std::result::Result<(), E> {
    MODE.with(|m| match m.get() {
        Mode::Allowed => Ok(()),
        Mode::Refusing | Mode::Refused => {
            m.set(Mode::Refused);
            Err(E::custom(
                "a value that calls another process cannot be decoded here",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_reported_and_the_mode_restored() {
        let r = without_remote_calls(before_remote_call::<serde::de::value::Error>);
        assert!(matches!(r, Attempt::Refused));
        assert!(before_remote_call::<serde::de::value::Error>().is_ok());
        let r = without_remote_calls(|| 7);
        assert!(matches!(r, Attempt::Done(7)));
    }
}
