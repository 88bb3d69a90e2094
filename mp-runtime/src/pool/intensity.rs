//! Restart intensity: how many unexpected worker deaths a pool accepts within a period before it
//! stops replacing workers (Erlang/OTP's supervisor `intensity` and `period`).
//!
//! A pool whose workers keep dying (an initializer that aborts, a run of poison items, a machine
//! out of memory) would otherwise start a replacement for every death, forever. Only deaths the
//! pool did not ask for count: workers killed for a time limit or a cancelled task, and workers
//! retired after `max_tasks_per_child` or `max_memory_per_child`, do not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most unexpected deaths within `period` that a pool replaces; one more breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Intensity {
    pub(crate) max_restarts: u32,
    pub(crate) period: Duration,
}

impl Intensity {
    /// The default: 100 deaths, or 2 per worker if that is more, within 10 seconds. A pool
    /// that loses workers to occasional crashes or kills keeps going; one whose every worker
    /// dies at once on start stops within a second or so instead of looping.
    pub(crate) fn default_for(processes: usize) -> Intensity {
        let per_worker = u32::try_from(processes.saturating_mul(2)).unwrap_or(u32::MAX);
        Intensity {
            max_restarts: per_worker.max(100),
            period: Duration::from_secs(10),
        }
    }
}

/// The times of the recent unexpected deaths.
#[derive(Debug)]
pub(crate) struct Deaths {
    limit: Intensity,
    recent: VecDeque<Instant>,
}

impl Deaths {
    pub(crate) fn new(limit: Intensity) -> Deaths {
        Deaths {
            limit,
            recent: VecDeque::new(),
        }
    }

    /// Records a death at `now`; `Some(why)` if it is one too many.
    pub(crate) fn record(&mut self, now: Instant) -> Option<String> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.limit.period)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        // Never more than the limit plus the one that breaks it.
        if self.recent.len() > self.limit.max_restarts as usize + 1 {
            self.recent.pop_front();
        }
        (self.recent.len() > self.limit.max_restarts as usize).then(|| {
            format!(
                "{} worker processes died within {:?} (restart intensity {} per {:?}); the pool \
                 stopped replacing them. Find out why they die (an initializer or a task that \
                 crashes the process?), or allow more with PoolBuilder::restart_intensity",
                self.recent.len(),
                now.duration_since(self.recent[0]),
                self.limit.max_restarts,
                self.limit.period,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_death_too_many_within_the_period_breaks_only_then() {
        let limit = Intensity {
            max_restarts: 2,
            period: Duration::from_secs(1),
        };
        let mut d = Deaths::new(limit);
        let t0 = Instant::now();
        assert!(d.record(t0).is_none());
        assert!(d.record(t0 + Duration::from_millis(100)).is_none());
        // Spread out: the first death has left the window.
        assert!(d.record(t0 + Duration::from_millis(1050)).is_none());
        let why = d.record(t0 + Duration::from_millis(1060)).unwrap();
        assert!(why.contains("3 worker processes died"), "{why}");
        assert!(why.contains("restart_intensity"), "{why}");
    }

    #[test]
    fn the_default_grows_with_the_pool() {
        assert_eq!(Intensity::default_for(4).max_restarts, 100);
        assert_eq!(Intensity::default_for(200).max_restarts, 400);
    }
}
