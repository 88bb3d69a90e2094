pub struct Names(Vec<String>);

#[mp::managed]
impl Names {
    pub fn new() -> Self {
        Names(Vec::new())
    }

    pub fn extend(&mut self, names: impl IntoIterator<Item = String>) {
        self.0.extend(names);
    }

    pub fn iter(&self) -> impl Iterator<Item = String> {
        self.0.clone().into_iter()
    }
}

fn main() {}
