//! `#[mp::managed]` next to items whose names its expansion could have used: workers (which are
//! constants, so a binding of the same name would be taken for them), in the same module as
//! the managed type and its proxy. Every name the expansion binds starts with `__mp_`.

pub struct Maths;

#[mp::managed]
impl Maths {
    pub fn new() -> Self {
        Maths
    }

    pub fn add(&self, x: i64, y: i64) -> i64 {
        x + y
    }

    pub fn scale(&mut self, k: i64) -> i64 {
        k
    }

    #[mp(proxy)]
    pub fn fork(&self) -> Maths {
        Maths
    }
}

#[mp::worker]
fn this(x: u32) -> u32 {
    x
}

#[mp::worker]
fn method(x: u32) -> u32 {
    x
}

#[mp::worker]
fn call(x: u32) -> u32 {
    x
}

#[mp::worker]
fn other(x: u32) -> u32 {
    x
}

#[mp::worker]
fn ctor(x: u32) -> u32 {
    x
}

#[mp::worker]
fn manager(x: u32) -> u32 {
    x
}

#[mp::worker]
fn timeout(x: u32) -> u32 {
    x
}

#[mp::worker]
fn r(x: u32) -> u32 {
    x
}

#[mp::worker]
fn f(x: u32) -> u32 {
    x
}

#[mp::worker]
fn s(x: u32) -> u32 {
    x
}

#[mp::worker]
fn d(x: u32) -> u32 {
    x
}

#[allow(dead_code)]
fn uses(m: &mp::Manager) -> mp::Result<()> {
    let p = MathsProxy::new(m)?;
    let _: i64 = p.add(1, 2)?;
    let _: i64 = p.scale_timeout(2, std::time::Duration::from_secs(1))?;
    let _: MathsProxy = p.fork()?;
    let _ = (
        this(1),
        method(1),
        call(1),
        other(1),
        ctor(1),
        manager(1),
        timeout(1),
    );
    let _ = (r(1), f(1), s(1), d(1));
    Ok(())
}

fn main() {}
