//! Python's subclass style, `class Worker(Process): def run(self)`, as a type implementing
//! `mp::Run`.

#[derive(serde::Serialize, serde::Deserialize)]
struct Counter {
    label: String,
    upto: u32,
}

#[mp::worker]
impl mp::Run for Counter {
    fn run(self) {
        for i in 1..=self.upto {
            println!("{}: {i}", self.label);
        }
    }
}

#[mp::main]
fn main() -> mp::Result<()> {
    let mut p = mp::Process::from_run(Counter {
        label: "counter".into(),
        upto: 3,
    });
    p.start()?;
    p.join()?;
    println!("exit code: {:?}", p.exitcode());
    Ok(())
}
