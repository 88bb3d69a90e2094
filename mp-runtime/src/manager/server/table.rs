//! The server's bookkeeping: objects, who holds references to them, tickets, published names.
//!
//! An object lives while anything refers to it. References are counted per holder:
//!
//! - a **session** (one client process) holds references for its proxies;
//! - a **ticket** holds one while it is alive: a proxy in flight between two processes (a
//!   *transfer*, alive until claimed or expired), or a proxy inside a value the server keeps
//!   (one *hold* per copy of that value);
//! - a **published name** holds one until shutdown.
//!
//! When a session ends (its process exited or was killed) its references go, so a dead client
//! leaks nothing. Every operation returns the objects whose last reference it removed, to be
//! dropped after the table's lock is released: dropping an object drops the values it keeps,
//! whose holds come back here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::managed::Object;
use super::super::protocol::{ObjId, RemoteError, Ticket};

/// An object and what the table knows of it.
struct Slot {
    obj: Arc<dyn Object>,
    refs: u64,
    label: String,
}

struct TicketState {
    obj: ObjId,
    /// Copies of a stored value that contain this ticket.
    holds: u32,
    /// A transfer not yet claimed, and when it expires.
    transfer: Option<Instant>,
}

impl TicketState {
    fn alive(&self) -> bool {
        self.holds > 0 || self.transfer.is_some()
    }
}

/// Objects whose last reference went: drop them after unlocking.
#[must_use]
pub(super) struct Dropped(Vec<Arc<dyn Object>>);

impl Dropped {
    fn none() -> Self {
        Dropped(Vec::new())
    }
}

#[derive(Default)]
pub(super) struct Table {
    objects: HashMap<ObjId, Slot>,
    sessions: HashMap<u64, HashMap<ObjId, u32>>,
    tickets: HashMap<Ticket, TicketState>,
    names: HashMap<String, ObjId>,
    /// Objects to tell when a session ends, with the sessions each asked about
    /// (`SessionWatch::watch`): a lock held by a process that died lets go.
    watchers: HashMap<ObjId, HashSet<u64>>,
}

/// A fresh random identifier not yet used as a key of `map`.
fn fresh<V>(map: &HashMap<u64, V>) -> u64 {
    loop {
        let mut b = [0u8; 8];
        crate::sys::random_bytes(&mut b).expect("getrandom failed");
        let id = u64::from_le_bytes(b);
        if id != 0 && !map.contains_key(&id) {
            return id;
        }
    }
}

impl Table {
    pub(super) fn new_session(&mut self) -> u64 {
        let id = fresh(&self.sessions);
        self.sessions.insert(id, HashMap::new());
        id
    }

    pub(super) fn has_session(&self, session: u64) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Drops every reference of `session`; also returns the objects that asked to be told,
    /// to call after unlocking.
    pub(super) fn end_session(&mut self, session: u64) -> (Dropped, Vec<Arc<dyn Object>>) {
        let mut told = Vec::new();
        for (obj, sessions) in &mut self.watchers {
            if sessions.remove(&session)
                && let Some(slot) = self.objects.get(obj)
            {
                told.push(slot.obj.clone());
            }
        }
        let held = self.sessions.remove(&session).unwrap_or_default();
        let mut dropped = Dropped::none();
        for (obj, count) in held {
            self.unref(obj, count as u64, &mut dropped);
        }
        (dropped, told)
    }

    /// `obj` asks to be told when `session` ends; false if it has ended already.
    pub(super) fn watch(&mut self, obj: ObjId, session: u64) -> bool {
        if !self.sessions.contains_key(&session) {
            return false;
        }
        if self.objects.contains_key(&obj) {
            self.watchers.entry(obj).or_default().insert(session);
        }
        true
    }

    /// Adds a new object, referenced once by `session`.
    pub(super) fn insert(&mut self, obj: Arc<dyn Object>, label: String, session: u64) -> ObjId {
        let id = self.add(obj, label);
        self.add_session_ref(id, session);
        id
    }

    /// Stores a new object under a fresh id, referenced by nothing yet.
    fn add(&mut self, obj: Arc<dyn Object>, label: String) -> ObjId {
        let id = fresh(&self.objects);
        self.objects.insert(
            id,
            Slot {
                obj,
                refs: 0,
                label,
            },
        );
        id
    }

    /// Adds a new object held only by a fresh transfer ticket (an object a method made for its
    /// caller): returns the ticket.
    pub(super) fn insert_for_transfer(
        &mut self,
        obj: Arc<dyn Object>,
        label: String,
        ttl: Duration,
    ) -> Ticket {
        let id = self.add(obj, label);
        self.retain(id, ttl).expect("just inserted")
    }

    fn add_session_ref(&mut self, obj: ObjId, session: u64) {
        if let Some(slot) = self.objects.get_mut(&obj) {
            slot.refs += 1;
            *self
                .sessions
                .entry(session)
                .or_default()
                .entry(obj)
                .or_insert(0) += 1;
        }
    }

    fn unref(&mut self, obj: ObjId, count: u64, dropped: &mut Dropped) {
        if let Some(slot) = self.objects.get_mut(&obj) {
            slot.refs = slot.refs.saturating_sub(count);
            if slot.refs == 0 {
                let slot = self.objects.remove(&obj).expect("present");
                self.watchers.remove(&obj);
                dropped.0.push(slot.obj);
            }
        }
    }

    /// The object `obj`, to call it.
    pub(super) fn get(&self, obj: ObjId) -> Result<Arc<dyn Object>, RemoteError> {
        self.objects
            .get(&obj)
            .map(|s| s.obj.clone())
            .ok_or(RemoteError::NoSuchObject)
    }

    /// `session` drops `count` of its references to `obj` (never more than it holds).
    pub(super) fn release(&mut self, session: u64, obj: ObjId, count: u32) -> Dropped {
        let mut dropped = Dropped::none();
        let Some(held) = self.sessions.get_mut(&session) else {
            return dropped;
        };
        let Some(n) = held.get_mut(&obj) else {
            return dropped;
        };
        let take = count.min(*n);
        *n -= take;
        if *n == 0 {
            held.remove(&obj);
        }
        self.unref(obj, take as u64, &mut dropped);
        dropped
    }

    /// A transfer ticket for `obj`, alive for `ttl` unless claimed.
    pub(super) fn retain(&mut self, obj: ObjId, ttl: Duration) -> Result<Ticket, RemoteError> {
        let slot = self
            .objects
            .get_mut(&obj)
            .ok_or(RemoteError::NoSuchObject)?;
        slot.refs += 1;
        let ticket = fresh(&self.tickets);
        self.tickets.insert(
            ticket,
            TicketState {
                obj,
                holds: 0,
                transfer: Some(Instant::now() + ttl),
            },
        );
        Ok(ticket)
    }

    /// Removes a ticket that is no longer alive, with its reference.
    fn settle(&mut self, ticket: Ticket, dropped: &mut Dropped) {
        if let Some(t) = self.tickets.get(&ticket)
            && !t.alive()
        {
            let obj = t.obj;
            self.tickets.remove(&ticket);
            self.unref(obj, 1, dropped);
        }
    }

    /// `session` claims `ticket`: it gets a reference to the ticket's object. A transfer is
    /// used up; a ticket inside a stored value stays for the next reader.
    pub(super) fn attach(
        &mut self,
        session: u64,
        ticket: Ticket,
    ) -> Result<((ObjId, String), Dropped), RemoteError> {
        let t = self
            .tickets
            .get_mut(&ticket)
            .filter(|t| t.alive())
            .ok_or(RemoteError::NoSuchTicket)?;
        t.transfer = None;
        let obj = t.obj;
        self.add_session_ref(obj, session);
        let mut dropped = Dropped::none();
        self.settle(ticket, &mut dropped);
        let label = self
            .objects
            .get(&obj)
            .map(|s| s.label.clone())
            .ok_or(RemoteError::NoSuchObject)?;
        Ok(((obj, label), dropped))
    }

    /// A stored value takes over `ticket` (a transfer becomes a hold), or another copy of one
    /// holds it again. Returns the ticket's object.
    pub(super) fn hold(&mut self, ticket: Ticket) -> Result<ObjId, RemoteError> {
        let t = self
            .tickets
            .get_mut(&ticket)
            .filter(|t| t.alive())
            .ok_or(RemoteError::NoSuchTicket)?;
        t.transfer = None;
        t.holds += 1;
        Ok(t.obj)
    }

    /// One copy of a stored value holding `ticket` is gone.
    pub(super) fn unhold(&mut self, ticket: Ticket) -> Dropped {
        let mut dropped = Dropped::none();
        if let Some(t) = self.tickets.get_mut(&ticket) {
            t.holds = t.holds.saturating_sub(1);
        }
        self.settle(ticket, &mut dropped);
        dropped
    }

    /// Ends the transfers that expired unclaimed.
    pub(super) fn expire(&mut self, now: Instant) -> Dropped {
        let mut dropped = Dropped::none();
        let expired: Vec<Ticket> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.transfer.is_some_and(|at| at <= now))
            .map(|(k, _)| *k)
            .collect();
        for ticket in expired {
            if let Some(t) = self.tickets.get_mut(&ticket) {
                t.transfer = None;
            }
            self.settle(ticket, &mut dropped);
        }
        dropped
    }

    /// Publishes `obj` as `name` (replacing an earlier object of that name).
    pub(super) fn expose(&mut self, name: &str, obj: ObjId) -> Result<Dropped, RemoteError> {
        let slot = self
            .objects
            .get_mut(&obj)
            .ok_or(RemoteError::NoSuchObject)?;
        slot.refs += 1;
        let mut dropped = Dropped::none();
        if let Some(old) = self.names.insert(name.to_owned(), obj) {
            self.unref(old, 1, &mut dropped);
        }
        Ok(dropped)
    }

    /// The object published as `name`, with a reference for `session`, if its label matches.
    pub(super) fn lookup(
        &mut self,
        session: u64,
        name: &str,
        label: &str,
    ) -> Result<ObjId, RemoteError> {
        let obj = *self
            .names
            .get(name)
            .ok_or_else(|| RemoteError::NoSuchName(name.to_owned()))?;
        let found = &self
            .objects
            .get(&obj)
            .ok_or(RemoteError::NoSuchObject)?
            .label;
        if found != label {
            return Err(RemoteError::Incompatible {
                type_name: label.to_owned(),
                message: format!("`{name}` is a `{found}`"),
            });
        }
        self.add_session_ref(obj, session);
        Ok(obj)
    }

    pub(super) fn len(&self) -> usize {
        self.objects.len()
    }

    /// Takes every object out (at shutdown), to drop them after unlocking.
    pub(super) fn clear(&mut self) -> Dropped {
        self.sessions.clear();
        self.tickets.clear();
        self.names.clear();
        self.watchers.clear();
        Dropped(self.objects.drain().map(|(_, s)| s.obj).collect())
    }
}
