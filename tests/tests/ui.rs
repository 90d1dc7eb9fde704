//! Every class of DSL error is a spanned compile error with its message (trybuild).

#[test]
fn dsl_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
