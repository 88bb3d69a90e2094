//! The registry check: every agent reports its registered workers (names, argument and result
//! types as written, crate versions, `mp`'s version) when it starts, and rank 0 compares them
//! with its own before a cluster pool is built. The same binary on every rank passes by
//! construction; another build or another program fails with [`Error::ClusterMismatch`] at
//! `build`, instead of tasks that fail to decode later.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::messages::Hello;
use crate::error::{Error, Result};
use crate::registry;

/// Test support: lines added to this process's registry, as a different build would have.
static SKEW: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Test support: makes this process's registry differ by `line`.
pub(crate) fn skew(line: &str) {
    SKEW.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(line.to_owned());
}

/// This process's registry, as agents report it.
pub(crate) fn lines() -> Vec<String> {
    let mut lines = registry::registry_lines();
    lines.extend(
        SKEW.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned(),
    );
    lines
}

/// Fails with the first agent whose registry differs from this process's.
pub(crate) fn check(hellos: &BTreeMap<usize, Hello>) -> Result<()> {
    let ours = lines();
    for (&rank, hello) in hellos {
        if let Some(message) = differences(&ours, &hello.lines) {
            return Err(Error::ClusterMismatch {
                rank,
                message: format!("{message} (on host {})", hello.host),
            });
        }
    }
    Ok(())
}

/// What differs between two registries, in words (`None`: nothing).
fn differences(ours: &[String], theirs: &[String]) -> Option<String> {
    let a: BTreeSet<&str> = ours.iter().map(String::as_str).collect();
    let b: BTreeSet<&str> = theirs.iter().map(String::as_str).collect();
    if a == b {
        return None;
    }
    let name = |l: &str| l.split(": ").next().unwrap_or(l).to_owned();
    let only_here: Vec<&str> = a.difference(&b).copied().collect();
    let only_there: Vec<&str> = b.difference(&a).copied().collect();
    let mut notes = Vec::new();
    for l in &only_here {
        match only_there.iter().find(|t| name(t) == name(l)) {
            Some(t) => notes.push(format!("`{l}` here is `{t}` there")),
            None => notes.push(format!("`{l}` is missing there")),
        }
    }
    for t in &only_there {
        if !only_here.iter().any(|l| name(l) == name(t)) {
            notes.push(format!("`{t}` exists only there"));
        }
    }
    let more = notes.len().saturating_sub(3);
    notes.truncate(3);
    let mut text = notes.join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    Some(format!("its registered workers differ: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_registries_pass_and_differences_are_named() {
        let ours = v(&["mp-runtime 0.1.0", "a: fn(u64) -> u64", "b: fn() -> ()"]);
        assert_eq!(differences(&ours, &ours.clone()), None);
        let theirs = v(&["mp-runtime 0.1.0", "a: fn(u32) -> u64", "c: fn() -> ()"]);
        let d = differences(&ours, &theirs).unwrap();
        assert!(
            d.contains("`a: fn(u64) -> u64` here is `a: fn(u32) -> u64` there"),
            "{d}"
        );
        assert!(d.contains("`b: fn() -> ()` is missing there"), "{d}");
        assert!(d.contains("`c: fn() -> ()` exists only there"), "{d}");
        let mut hellos = BTreeMap::new();
        hellos.insert(
            2,
            Hello {
                cpus: 1,
                host: "n2".into(),
                lines: theirs,
            },
        );
        // This test binary's own registry differs from `theirs` as well.
        match check(&hellos) {
            Err(Error::ClusterMismatch { rank: 2, message }) => {
                assert!(message.contains("on host n2"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
