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
    /// The session that created it (0: the server), charged for it while it lives.
    creator: u64,
    /// Descriptors the object opened when it was built (a queue's), charged to `creator`.
    fds: usize,
}

/// What a session's creations cost the server while they live.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Usage {
    pub(super) objects: usize,
    pub(super) fds: usize,
}

struct TicketState {
    obj: ObjId,
    /// Copies of a stored value that contain this ticket, kept by no known object.
    holds: u32,
    /// Copies kept by known objects (built-in containers), by object: the edges along which
    /// [`Table::collect_cycles`] looks for what is still reachable.
    holders: HashMap<ObjId, u32>,
    /// Claims expected from transfers in flight: a proxy sent, or a copy of a stored value
    /// sent to a client (each reader claims once).
    transfers: u32,
    /// When the transfers in flight expire unclaimed.
    expires: Instant,
}

impl TicketState {
    fn alive(&self) -> bool {
        self.holds > 0 || self.transfers > 0 || !self.holders.is_empty()
    }

    /// Whether only objects keep this ticket (no transfer in flight, no copy of unknown
    /// keeper): its reference is internal to the table's graph.
    fn only_kept_by_objects(&self) -> bool {
        self.holds == 0 && self.transfers == 0 && !self.holders.is_empty()
    }

    /// One transfer in flight is claimed (if any is: a hold may be claimed without one).
    fn claim_transfer(&mut self) {
        self.transfers = self.transfers.saturating_sub(1);
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
    /// Published names: the object and the session that published it.
    names: HashMap<String, (ObjId, u64)>,
    /// What each live session's creations cost.
    usage: HashMap<u64, Usage>,
    /// Sessions of processes forked from another session's process, and that session: they
    /// may use its references (the proxies they inherited in memory).
    borrows: HashMap<u64, u64>,
    /// Objects to tell when a session ends, with the sessions each asked about
    /// (`SessionWatch::watch`): a lock held by a process that died lets go.
    watchers: HashMap<ObjId, HashSet<u64>>,
}

/// The error of a request whose session ended while it was served (nobody reads it).
fn session_ended() -> RemoteError {
    RemoteError::State("the calling process left the manager".into())
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
        self.usage.remove(&session);
        self.borrows.remove(&session);
        let mut dropped = Dropped::none();
        for (obj, count) in held {
            self.unref(obj, count as u64, &mut dropped);
        }
        self.collect_cycles(&mut dropped);
        (dropped, told)
    }

    /// `obj` asks to be told when `session` ends; false if it has ended already (a session
    /// that ended is never opened again: nothing adds to it).
    pub(super) fn watch(&mut self, obj: ObjId, session: u64) -> bool {
        if !self.sessions.contains_key(&session) {
            return false;
        }
        if self.objects.contains_key(&obj) {
            self.watchers.entry(obj).or_default().insert(session);
        }
        true
    }

    /// Adds a new object, referenced once by `session`. If the session has ended (its process
    /// died while the object was being built), the object is not kept: it comes back to be
    /// dropped after unlocking.
    pub(super) fn insert(
        &mut self,
        obj: Arc<dyn Object>,
        label: String,
        session: u64,
        fds: usize,
    ) -> Result<ObjId, Dropped> {
        if !self.sessions.contains_key(&session) {
            return Err(Dropped(vec![obj]));
        }
        let id = self.add(obj, label);
        if let Some(slot) = self.objects.get_mut(&id) {
            slot.creator = session;
            slot.fds = fds;
        }
        let usage = self.usage.entry(session).or_default();
        usage.objects += 1;
        usage.fds += fds;
        self.add_session_ref(id, session);
        Ok(id)
    }

    /// What `session`'s live creations cost.
    pub(super) fn usage(&self, session: u64) -> Usage {
        self.usage.get(&session).copied().unwrap_or_default()
    }

    /// Whether `session` holds a reference to `obj`, or borrows one from the session of the
    /// process it was forked from: a session reaches only those objects (an id alone, seen in a
    /// log, is not enough). Session 0 is the server itself.
    pub(super) fn held_by(&self, session: u64, obj: ObjId) -> bool {
        if session == 0 {
            return true;
        }
        let mut s = session;
        // A chain of forks; bounded in case of a cycle of ids.
        for _ in 0..64 {
            if self
                .sessions
                .get(&s)
                .is_some_and(|held| held.contains_key(&obj))
            {
                return true;
            }
            match self.borrows.get(&s) {
                Some(&parent) => s = parent,
                None => return false,
            }
        }
        false
    }

    /// `session` (new) may use the references of `parent`, if that session is open.
    pub(super) fn borrow(&mut self, session: u64, parent: u64) {
        if self.sessions.contains_key(&parent) && parent != session {
            self.borrows.insert(session, parent);
        }
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
                creator: 0,
                fds: 0,
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

    /// Adds a reference of `session` to `obj`. Never to a session that has ended: that would
    /// bring it back, and nothing would end it again.
    fn add_session_ref(&mut self, obj: ObjId, session: u64) {
        if let Some(held) = self.sessions.get_mut(&session)
            && let Some(slot) = self.objects.get_mut(&obj)
        {
            slot.refs += 1;
            *held.entry(obj).or_insert(0) += 1;
        }
    }

    fn unref(&mut self, obj: ObjId, count: u64, dropped: &mut Dropped) {
        if let Some(slot) = self.objects.get_mut(&obj) {
            slot.refs = slot.refs.saturating_sub(count);
            if slot.refs == 0 {
                self.take_out(obj, dropped);
            }
        }
    }

    /// Takes `obj` out of the table for `dropped`: its watchers go, and its creator is no
    /// longer charged for it.
    fn take_out(&mut self, obj: ObjId, dropped: &mut Dropped) {
        if let Some(slot) = self.objects.remove(&obj) {
            self.watchers.remove(&obj);
            if let Some(usage) = self.usage.get_mut(&slot.creator) {
                usage.objects = usage.objects.saturating_sub(1);
                usage.fds = usage.fds.saturating_sub(slot.fds);
            }
            dropped.0.push(slot.obj);
        }
    }

    /// The object `obj`, to call it for `session`, which must hold it.
    pub(super) fn get_held(
        &self,
        session: u64,
        obj: ObjId,
    ) -> Result<Arc<dyn Object>, RemoteError> {
        if self.held_by(session, obj) {
            self.get(obj)
        } else {
            Err(RemoteError::NoSuchObject)
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
        if self.objects.contains_key(&obj) && self.kept_by_objects(obj) {
            // The object lives on only through other objects: perhaps in a cycle.
            self.collect_cycles(&mut dropped);
        }
        dropped
    }

    /// Whether some object keeps a reference to `obj` (a proxy of it inside a stored value).
    fn kept_by_objects(&self, obj: ObjId) -> bool {
        self.tickets
            .values()
            .any(|t| t.obj == obj && !t.holders.is_empty())
    }

    /// Cycles: objects that only objects refer to, none of which anything outside reaches (a
    /// list holding a proxy of itself after its last client let go), are taken out for
    /// `dropped`. As they drop, the values they keep give their references back.
    ///
    /// A reference is internal when a ticket is kept only by known objects (the built-in
    /// containers, see `holder::holding_for`); everything else (sessions, names, transfers in
    /// flight, copies whose keeper is not known) makes its object a root. What a root reaches
    /// through the objects' tickets stays; the rest is garbage.
    pub(super) fn collect_cycles(&mut self, dropped: &mut Dropped) {
        if self.tickets.values().all(|t| t.holders.is_empty()) {
            return;
        }
        let mut internal: HashMap<ObjId, u64> = HashMap::new();
        let mut edges: HashMap<ObjId, Vec<ObjId>> = HashMap::new();
        for t in self.tickets.values() {
            if t.only_kept_by_objects() {
                *internal.entry(t.obj).or_insert(0) += 1;
            }
            for holder in t.holders.keys() {
                edges.entry(*holder).or_default().push(t.obj);
            }
        }
        let mut reached: HashSet<ObjId> = HashSet::new();
        let mut stack: Vec<ObjId> = self
            .objects
            .iter()
            .filter(|(id, slot)| slot.refs > internal.get(id).copied().unwrap_or(0))
            .map(|(id, _)| *id)
            .collect();
        while let Some(id) = stack.pop() {
            if reached.insert(id) {
                stack.extend(edges.get(&id).into_iter().flatten().copied());
            }
        }
        let garbage: Vec<ObjId> = self
            .objects
            .keys()
            .filter(|id| !reached.contains(id))
            .copied()
            .collect();
        for id in garbage {
            self.take_out(id, dropped);
        }
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
                holders: HashMap::new(),
                transfers: 1,
                expires: Instant::now() + ttl,
            },
        );
        Ok(ticket)
    }

    /// A copy of a stored value holding `ticket` is on its way to a client, which will claim
    /// the ticket: one more transfer in flight, alive for `ttl` unless claimed. (So a value
    /// taken out of its container, whose holds go with it, still reaches its reader.)
    pub(super) fn lend(&mut self, ticket: Ticket, ttl: Duration) -> Result<(), RemoteError> {
        let t = self
            .tickets
            .get_mut(&ticket)
            .filter(|t| t.alive())
            .ok_or(RemoteError::NoSuchTicket)?;
        t.transfers += 1;
        t.expires = t.expires.max(Instant::now() + ttl);
        Ok(())
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
    /// used up; a ticket inside a stored value stays for the next reader. If the session has
    /// ended (its process died while the request was on its way), the transfer is used up all
    /// the same, for nobody: its reference goes.
    pub(super) fn attach(
        &mut self,
        session: u64,
        ticket: Ticket,
    ) -> (Result<(ObjId, String), RemoteError>, Dropped) {
        let mut dropped = Dropped::none();
        let Some(t) = self.tickets.get_mut(&ticket).filter(|t| t.alive()) else {
            return (Err(RemoteError::NoSuchTicket), dropped);
        };
        t.claim_transfer();
        let obj = t.obj;
        let alive = self.sessions.contains_key(&session);
        self.add_session_ref(obj, session);
        self.settle(ticket, &mut dropped);
        if !alive {
            return (Err(session_ended()), dropped);
        }
        let label = self
            .objects
            .get(&obj)
            .map(|s| s.label.clone())
            .ok_or(RemoteError::NoSuchObject);
        (label.map(|l| (obj, l)), dropped)
    }

    /// A value kept in the server takes over `ticket` (a transfer becomes a hold). Returns the
    /// ticket's object.
    pub(super) fn hold(&mut self, ticket: Ticket, holder: ObjId) -> Result<ObjId, RemoteError> {
        let t = self
            .tickets
            .get_mut(&ticket)
            .filter(|t| t.alive())
            .ok_or(RemoteError::NoSuchTicket)?;
        t.claim_transfer();
        if holder == 0 {
            t.holds += 1;
        } else {
            *t.holders.entry(holder).or_insert(0) += 1;
        }
        Ok(t.obj)
    }

    /// Another copy of a stored value holds `ticket` (transfers in flight are left alone).
    pub(super) fn hold_again(&mut self, ticket: Ticket) {
        if let Some(t) = self.tickets.get_mut(&ticket) {
            t.holds += 1;
        }
    }

    /// One copy of a stored value holding `ticket` is gone.
    pub(super) fn unhold(&mut self, ticket: Ticket, holder: ObjId) -> Dropped {
        let mut dropped = Dropped::none();
        if let Some(t) = self.tickets.get_mut(&ticket) {
            match t.holders.get_mut(&holder) {
                Some(n) if holder != 0 => {
                    *n -= 1;
                    if *n == 0 {
                        t.holders.remove(&holder);
                    }
                }
                _ => t.holds = t.holds.saturating_sub(1),
            }
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
            .filter(|(_, t)| t.transfers > 0 && t.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for ticket in expired {
            if let Some(t) = self.tickets.get_mut(&ticket) {
                t.transfers = 0;
            }
            self.settle(ticket, &mut dropped);
        }
        dropped
    }

    /// Publishes `obj` (which `session` holds) as `name`. A name in use is refused, unless
    /// `replace` is set and `session` published it: nobody takes over another's name.
    pub(super) fn expose(
        &mut self,
        session: u64,
        name: &str,
        obj: ObjId,
        replace: bool,
    ) -> Result<Dropped, RemoteError> {
        if !self.held_by(session, obj) {
            return Err(RemoteError::NoSuchObject);
        }
        let mut dropped = Dropped::none();
        match self.names.get(name) {
            Some(&(old, _)) if old == obj => return Ok(dropped),
            Some(&(_, publisher)) if replace && publisher == session => {}
            Some(_) if replace => {
                return Err(RemoteError::State(format!(
                    "`{name}` was published by another process: only the process that \
                     published a name may replace it"
                )));
            }
            Some(_) => {
                return Err(RemoteError::State(format!(
                    "`{name}` is already published; use `expose_replace` to replace your own \
                     object, or another name"
                )));
            }
            None => {}
        }
        let slot = self
            .objects
            .get_mut(&obj)
            .ok_or(RemoteError::NoSuchObject)?;
        slot.refs += 1;
        if let Some((old, _)) = self.names.insert(name.to_owned(), (obj, session)) {
            self.unref(old, 1, &mut dropped);
        }
        Ok(dropped)
    }

    /// The object published as `name`, with a reference for `session`, if its label matches
    /// (and the session has not ended).
    pub(super) fn lookup(
        &mut self,
        session: u64,
        name: &str,
        label: &str,
    ) -> Result<ObjId, RemoteError> {
        if !self.sessions.contains_key(&session) {
            return Err(session_ended());
        }
        let (obj, _) = *self
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
        self.usage.clear();
        self.borrows.clear();
        self.watchers.clear();
        Dropped(self.objects.drain().map(|(_, s)| s.obj).collect())
    }
}

#[cfg(test)]
mod tests;
