//! Compile-time diagnostics of `#[mp::worker]`, `#[mp::main]` and `#[mp::managed]`, checked
//! with trybuild. Regenerate the expected output with `TRYBUILD=overwrite cargo test --test compiletest` and
//! read the diff; the compiler is pinned in rust-toolchain.toml so the output is stable.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/worker/*.rs");
    t.compile_fail("tests/ui/main/*.rs");
    t.compile_fail("tests/ui/managed/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
