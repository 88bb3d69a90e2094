//! Valid uses of `#[mp::managed]`: constructors, shared and exclusive methods, a method's own
//! error, a method returning another managed object, private helpers, `Self` in signatures,
//! `cfg`, a renamed proxy, and the `crate = "..."` path for re-exports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct DivByZero;

#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    n: u64,
}

#[mp::managed]
impl Counter {
    /// A counter starting at `start`.
    pub fn new(start: u64) -> Self {
        Counter { n: start }
    }

    /// A counter at zero.
    pub fn zero() -> Counter {
        Counter::default()
    }

    pub fn get(&self) -> u64 {
        self.helper()
    }

    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }

    pub fn div(&mut self, d: u64) -> Result<u64, DivByZero> {
        self.n = self.n.checked_div(d).ok_or(DivByZero)?;
        Ok(self.n)
    }

    #[mp(proxy)]
    pub fn split(&mut self) -> Counter {
        let half = self.n / 2;
        self.n -= half;
        Counter { n: half }
    }

    #[mp(proxy)]
    pub(crate) fn fresh(&self) -> Self {
        Counter::default()
    }

    pub fn snapshot(&self) -> Self {
        Counter { n: self.n }
    }

    pub fn merge(&mut self, others: Vec<Self>, (a, b): (u64, u64), arg0: u8) {
        self.n += others.iter().map(|o| o.n).sum::<u64>() + a + b + u64::from(arg0);
    }

    pub fn reset(&mut self, timeout: u64) {
        self.n = timeout;
    }

    #[cfg(any())]
    pub fn never(&self) -> NotEvenDefined {
        unreachable!()
    }

    fn helper(&self) -> u64 {
        self.n
    }
}

mod reexport {
    pub use mp;
}

pub struct Hidden;

#[mp::managed(crate = "reexport::mp", proxy_name = "HiddenHandle")]
impl Hidden {
    pub(crate) fn new() -> Self {
        Hidden
    }

    pub(crate) fn ping(&self, manager: String) -> String {
        manager
    }
}

#[allow(dead_code)]
fn uses(m: &mp::Manager) -> mp::Result<()> {
    let c: CounterProxy = CounterProxy::new(m, 5)?;
    let _: CounterProxy = CounterProxy::zero(m)?;
    let _: u64 = c.get()?;
    let _: u64 = c.add_timeout(1, Duration::from_secs(1))?;
    let _: Result<u64, DivByZero> = c.div(0)?;
    let half: CounterProxy = c.split()?;
    let _: CounterProxy = half.fresh_timeout(Duration::from_secs(1))?;
    let _: Counter = c.snapshot()?;
    c.merge(vec![Counter::default()], (1, 2), 3)?;
    c.reset_timeout(0, Duration::from_secs(1))?;
    let h: HiddenHandle = HiddenHandle::new(m)?;
    let _: String = h.ping("x".into())?;
    let _ = format!("{:?}", h.clone());
    Ok(())
}

fn main() {
    use mp::manager::Managed;
    assert_eq!(
        Counter::METHODS,
        &[
            "Counter::get",
            "Counter::add",
            "Counter::div",
            "Counter::split",
            "Counter::fresh",
            "Counter::snapshot",
            "Counter::merge",
            "Counter::reset",
            "Counter::never",
        ]
    );
    assert!(Counter::TYPE_NAME.ends_with("::Counter"));
    assert_ne!(Counter::FINGERPRINT, Hidden::FINGERPRINT);
}
