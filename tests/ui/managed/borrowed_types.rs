use std::borrow::Cow;

pub struct Names(Vec<String>);

#[mp::managed]
impl Names {
    pub fn new() -> Self {
        Names(Vec::new())
    }

    pub fn push(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }

    pub fn first(&self) -> &String {
        &self.0[0]
    }

    pub fn all(&self, into: Vec<&mut String>) {
        let _ = into;
    }

    pub fn label(&self) -> Cow<'_, str> {
        Cow::Borrowed("names")
    }

    pub fn fixed(&self) -> Cow<'static, str> {
        Cow::Borrowed("this one is fine")
    }
}

fn main() {}
