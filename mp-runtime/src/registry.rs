//! The static registry of workers: every `#[mp::worker]` submits an entry, and a child finds the
//! function to run by its registered name.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::worker::{Input, Outcome};

/// How a child runs a worker from its encoded arguments.
pub type EntryFn = fn(Input<'_>) -> Outcome;

/// One registered worker.
#[doc(hidden)]
pub struct WorkerEntry {
    name: &'static str,
    entry: EntryFn,
    signature: &'static str,
}

impl WorkerEntry {
    #[doc(hidden)]
    pub const fn new(name: &'static str, entry: EntryFn) -> Self {
        WorkerEntry {
            name,
            entry,
            signature: "",
        }
    }

    /// The worker's argument and result types as written, and its crate's version: what a
    /// cluster compares between ranks (`registry_lines`).
    #[doc(hidden)]
    pub const fn with_signature(mut self, signature: &'static str) -> Self {
        self.signature = signature;
        self
    }
}

inventory::collect!(WorkerEntry);

enum Slot {
    One(EntryFn),
    Ambiguous(usize),
}

fn table() -> &'static HashMap<&'static str, Slot> {
    static TABLE: OnceLock<HashMap<&'static str, Slot>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = HashMap::new();
        for w in inventory::iter::<WorkerEntry> {
            map.entry(w.name)
                .and_modify(|s| {
                    *s = match s {
                        Slot::One(_) => Slot::Ambiguous(2),
                        Slot::Ambiguous(n) => Slot::Ambiguous(*n + 1),
                    }
                })
                .or_insert(Slot::One(w.entry));
        }
        map
    })
}

/// Every registered worker as `name: signature`, sorted, with the runtime's version: equal on
/// two processes exactly when they run the same workers with the same types (a cluster's
/// registry check).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn registry_lines() -> Vec<String> {
    let mut lines: Vec<String> = inventory::iter::<WorkerEntry>
        .into_iter()
        .map(|w| format!("{}: {}", w.name, w.signature))
        .collect();
    lines.sort();
    lines.insert(0, format!("mp-runtime {}", env!("CARGO_PKG_VERSION")));
    lines
}

/// The `'static` name of a registered worker (runtime workers included), if there is one.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn static_name(name: &str) -> Option<&'static str> {
    if let Some((n, _)) = INTERNAL
        .get()
        .and_then(|table| table.iter().find(|(n, _)| *n == name))
    {
        return Some(n);
    }
    table().get_key_value(name).map(|(n, _)| *n)
}

/// The runtime's own workers (the pool's worker loop, ...), by name.
pub(crate) type InternalWorkers = &'static [(&'static str, EntryFn)];

static INTERNAL: OnceLock<InternalWorkers> = OnceLock::new();

/// Hands the registry the runtime's own workers. The role table (`roles.rs`) calls it before
/// anything else runs: the registry cannot name those workers itself, since their modules use
/// it, and `inventory` cannot carry them, because a spawned child enters its worker from a
/// constructor of this crate that may run before this crate's own `inventory` registrations.
pub(crate) fn install_internal(workers: InternalWorkers) {
    let _ = INTERNAL.set(workers);
}

/// Whether `name` is one of the runtime's own workers (a pool's worker loop, a manager's
/// server), whose failures are reported in their own words rather than as a user's worker.
pub(crate) fn is_internal(name: &str) -> bool {
    INTERNAL
        .get()
        .is_some_and(|table| table.iter().any(|(n, _)| *n == name))
}

/// A registered name without the `@line:column` that `#[mp::worker]` appends (which only tells
/// apart workers of one name in different function bodies), for messages about a call.
pub(crate) fn display_name(registered: &str) -> &str {
    match registered.rsplit_once('@') {
        Some((name, at)) if at.split(':').all(|n| n.bytes().all(|b| b.is_ascii_digit())) => name,
        _ => registered,
    }
}

/// The entry registered as `name`.
pub(crate) fn find(name: &str) -> Result<EntryFn> {
    if let Some((_, f)) = INTERNAL
        .get()
        .and_then(|table| table.iter().find(|(n, _)| *n == name))
    {
        return Ok(*f);
    }
    match table().get(name) {
        Some(Slot::One(f)) => Ok(*f),
        Some(Slot::Ambiguous(n)) => Err(Error::InvalidState {
            message: format!(
                "{n} workers are registered as `{name}` (workers of one name defined at one \
                 place, e.g. by a macro expanded there more than once), so the child cannot \
                 tell which to run; give them different names"
            ),
        }),
        None => Err(Error::UnknownWorker {
            name: name.to_owned(),
            hint: " (is the child running a different build of the program?)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn display_names_drop_only_the_location() {
        assert_eq!(display_name("app::square@12:1"), "app::square");
        assert_eq!(display_name("app::square"), "app::square");
        assert_eq!(
            display_name("mp::pool::worker_loop"),
            "mp::pool::worker_loop"
        );
        assert_eq!(display_name("odd@name"), "odd@name");
    }
}
