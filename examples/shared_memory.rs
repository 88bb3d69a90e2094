//! Python's documentation examples for `multiprocessing.shared_memory`: two handles on one
//! segment, a `ShareableList` attached by name, and a `SharedMemoryManager`.
//!
//! ```python
//! from multiprocessing import shared_memory
//! shm_a = shared_memory.SharedMemory(create=True, size=10)
//! buffer = shm_a.buf
//! buffer[:4] = bytearray([22, 33, 44, 55])
//! buffer[4] = 100
//! shm_b = shared_memory.SharedMemory(shm_a.name)
//! bytes(shm_b.buf[:5])          # b'\x16!,7d'
//! shm_b.close(); shm_a.close(); shm_a.unlink()
//!
//! a = shared_memory.ShareableList(['howdy', b'HoWdY', -273.154, 100, None, True, 42])
//! a[2] = -78.5
//! b = shared_memory.ShareableList(name=a.shm.name)
//! b[-1] = -1
//! a[-1]                         # -1
//!
//! from multiprocessing.managers import SharedMemoryManager
//! with SharedMemoryManager() as smm:
//!     sl = smm.ShareableList(range(2000))
//!     p1 = Process(target=do_work, args=(sl, 0, 1000))
//!     p2 = Process(target=do_work, args=(sl, 1000, 2000))
//!     p1.start(); p2.start(); p1.join(); p2.join()
//!     total_result = sum(sl)
//! ```
//!
//! Differences: the creating handle unlinks the name when dropped (a killed creator's segments
//! are unlinked by the resource tracker); a `ShareableList` is typed, so Python's mixed list is
//! a list of an enum.

use mp::shared_memory::{ShareableList, SharedMemory, SharedMemoryManager};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Item {
    Str(String),
    Bytes(Vec<u8>),
    Float(f64),
    Int(i64),
    None,
    Bool(bool),
}

/// Squares the items in `[start, end)` in place.
#[mp::worker]
fn do_work(sl: ShareableList<u64>, start: usize, end: usize) {
    for i in start..end {
        let v = sl.get(i).unwrap();
        sl.set(i, &(v * v)).unwrap();
    }
}

#[mp::main]
fn main() -> mp::Result<()> {
    let shm_a = SharedMemory::create(10)?;
    shm_a.write_at(0, &[22, 33, 44, 55])?;
    shm_a.write_at(4, &[100])?;
    let shm_b = SharedMemory::open(shm_a.name())?;
    let mut five = [0u8; 5];
    shm_b.read_at(0, &mut five)?;
    println!("{:?}", String::from_utf8_lossy(&five));
    drop(shm_b);
    shm_a.unlink()?;

    let a = ShareableList::create([
        Item::Str("howdy".into()),
        Item::Bytes(b"HoWdY".to_vec()),
        Item::Float(-273.154),
        Item::Int(100),
        Item::None,
        Item::Bool(true),
        Item::Int(42),
    ])?;
    a.set(2, &Item::Float(-78.5))?;
    let b = ShareableList::<Item>::open(a.name())?;
    b.set(b.len() - 1, &Item::Int(-1))?;
    println!("{:?}", a.get(a.len() - 1)?);

    let smm = SharedMemoryManager::new();
    let sl = smm.shareable_list(0..2000u64)?;
    let mut p1 = mp::Process::new(do_work, (smm_handle(&sl)?, 0, 1000));
    let mut p2 = mp::Process::new(do_work, (smm_handle(&sl)?, 1000, 2000));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    let total: u64 = sl.to_vec()?.iter().sum();
    println!("total_result = {total}");
    smm.shutdown();
    Ok(())
}

/// Another handle on the same list, for a second child.
fn smm_handle(sl: &ShareableList<u64>) -> mp::Result<ShareableList<u64>> {
    ShareableList::open(sl.name())
}
