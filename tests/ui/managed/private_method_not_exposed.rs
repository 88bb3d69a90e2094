pub struct FooBar;

#[mp::managed]
impl FooBar {
    pub fn new() -> Self {
        FooBar
    }

    pub fn f(&self) -> String {
        "f()".into()
    }

    fn h(&self) -> String {
        "_h()".into()
    }
}

fn call(foo: &FooBarProxy) -> mp::Result<String> {
    assert_eq!(FooBar.h(), "_h()");
    foo.h()
}

fn main() {}
