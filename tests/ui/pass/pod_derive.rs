// `#[derive(mp::Pod, mp::Zeroable)]` in a crate whose only dependency is `mp`: the generated
// code must reach the traits through `mp`. This test crate can see `bytemuck` (a dev-dependency
// of `mp`), so the name is given to an unrelated crate here, as if `bytemuck` were absent: code
// that names `::bytemuck::Pod` does not compile (bytemuck's own derives do).
extern crate core as bytemuck;

#[derive(Clone, Copy, Debug, PartialEq, mp::Pod, mp::Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, mp::Pod, mp::Zeroable)]
#[repr(C)]
struct Sample(u32, [u8; 4], Point);

#[derive(Clone, Copy, Debug, PartialEq, mp::Pod, mp::Zeroable)]
#[repr(transparent)]
struct Meters<T: Copy + 'static>(T);

#[derive(Clone, Copy, mp::Zeroable)]
struct Counters {
    hits: u64,
    flags: [u8; 3],
}

mod reexport {
    pub use mp;
}

#[derive(Clone, Copy, mp::Pod, mp::Zeroable)]
#[mp(crate = "reexport::mp")]
#[repr(C)]
struct Renamed {
    a: u16,
    b: u16,
}

fn zeroed<T: mp::Zeroable>() -> T {
    T::zeroed()
}

#[mp::main]
fn main() -> mp::Result<()> {
    let v = mp::Value::new(Point { x: 1.0, y: 2.0 })?;
    v.lock()?.x = 3.0;
    assert_eq!(v.get()?, Point { x: 3.0, y: 2.0 });
    let a = mp::Array::<Sample>::new(2)?;
    a.set(1, Sample(7, *b"abcd", Point { x: 0.5, y: 0.0 }))?;
    assert_eq!(a.get(1)?.1, *b"abcd");
    let m = mp::RawValue::new(Meters(2.5f32))?;
    assert_eq!(m.get(), Meters(2.5));
    let c: Counters = zeroed();
    assert_eq!((c.hits, c.flags), (0, [0; 3]));
    let r: Renamed = zeroed();
    assert_eq!(mp::RawArray::from_slice(&[r])?.get(0).map(|r| r.a + r.b)?, 0);
    // `bytemuck` here is `core`, whatever the derives needed.
    assert_eq!(bytemuck::mem::size_of::<Point>(), 16);
    Ok(())
}
