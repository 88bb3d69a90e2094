use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::manager::managed::{Call, Out};

/// An object that counts how often it is dropped.
struct Probe(Arc<AtomicU32>);

impl Object for Probe {
    fn dispatch(&self, _method: u16, _call: &mut Call<'_>) -> Result<Out, RemoteError> {
        Err(RemoteError::NoSuchObject)
    }
    fn session_ended(&self, _session: u64) {}
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn probe() -> (Arc<dyn Object>, Arc<AtomicU32>) {
    let drops = Arc::new(AtomicU32::new(0));
    (Arc::new(Probe(drops.clone())), drops)
}

const TTL: Duration = Duration::from_secs(3600);

#[test]
fn an_object_built_for_a_session_that_ended_is_not_kept() {
    let mut t = Table::default();
    let s = t.new_session();
    let (kept, _) = probe();
    let marker = t.insert(kept, "marker".into(), s, 0).ok().unwrap();
    let (dropped, _) = t.end_session(s);
    assert_eq!(dropped.0.len(), 1);
    let (late, drops) = probe();
    let refused = t.insert(late, "late".into(), s, 0);
    assert!(refused.is_err());
    drop(refused);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the late object is dropped"
    );
    assert_eq!(t.len(), 0);
    assert!(!t.has_session(s), "the session is not opened again");
    assert!(!t.watch(marker, s));
}

#[test]
fn a_session_that_ended_claims_nothing_and_watches_nothing() {
    let mut t = Table::default();
    let owner = t.new_session();
    let (obj, drops) = probe();
    let id = t.insert(obj, "obj".into(), owner, 0).ok().unwrap();
    let ticket = t.retain(id, TTL).unwrap();
    let dead = t.new_session();
    drop(t.end_session(dead));
    let (claimed, dropped) = t.attach(dead, ticket);
    assert!(claimed.is_err());
    assert!(dropped.0.is_empty(), "the owner still holds it");
    assert!(
        matches!(t.attach(owner, ticket).0, Err(RemoteError::NoSuchTicket)),
        "the transfer was used up"
    );
    assert!(t.lookup(dead, "obj", "obj").is_err());
    assert!(!t.watch(id, dead));
    assert!(!t.has_session(dead));
    let (dropped, _) = t.end_session(owner);
    assert_eq!(dropped.0.len(), 1);
    drop(dropped);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(t.len(), 0);
}

#[test]
fn a_stored_value_sent_to_a_client_can_be_claimed_after_the_value_is_gone() {
    let mut t = Table::default();
    let s = t.new_session();
    let (obj, _) = probe();
    let id = t.insert(obj, "obj".into(), s, 0).ok().unwrap();
    // A client stores a proxy in a container: its transfer becomes the value's hold.
    let ticket = t.retain(id, TTL).unwrap();
    assert_eq!(t.hold(ticket, 0).unwrap(), id);
    // Another copy comes and goes (a `get`): the ticket is unchanged.
    t.hold_again(ticket);
    drop(t.unhold(ticket, 0));
    // The value is taken out (`remove`): encoded for the reader, then dropped in the server.
    t.lend(ticket, TTL).unwrap();
    drop(t.unhold(ticket, 0));
    drop(t.release(s, id, 1));
    assert_eq!(t.len(), 1, "the transfer in flight keeps the object");
    let reader = t.new_session();
    let (claimed, dropped) = t.attach(reader, ticket);
    assert_eq!(claimed.unwrap().0, id);
    assert!(dropped.0.is_empty());
    assert!(matches!(
        t.attach(reader, ticket).0,
        Err(RemoteError::NoSuchTicket)
    ));
    let (dropped, _) = t.end_session(reader);
    assert_eq!(dropped.0.len(), 1);
}

#[test]
fn a_lent_copy_nobody_claims_expires() {
    let mut t = Table::default();
    let s = t.new_session();
    let (obj, _) = probe();
    let id = t.insert(obj, "obj".into(), s, 0).ok().unwrap();
    let ticket = t.retain(id, TTL).unwrap();
    t.hold(ticket, 0).unwrap();
    t.lend(ticket, Duration::ZERO).unwrap();
    drop(t.unhold(ticket, 0));
    drop(t.release(s, id, 1));
    assert_eq!(t.len(), 1);
    let dropped = t.expire(Instant::now() + TTL * 2);
    assert_eq!(dropped.0.len(), 1);
    assert_eq!(t.len(), 0);
}
