//! Property test: random small declarations, valid or not, compile to naga-valid WGSL or to
//! spanned errors, and never panic.

use rand::{Rng, SeedableRng};

fn random_op(rng: &mut impl Rng) -> String {
    let n = |rng: &mut dyn rand::RngCore, lo: u32, hi: u32| rng.random_range(lo..=hi);
    match rng.random_range(0..9) {
        0 => format!("conv({}, k = {}, s = {}, p = {}, groups = {})", n(rng, 0, 12), n(rng, 0, 6), n(rng, 0, 3), n(rng, 0, 3), n(rng, 1, 4)),
        1 => format!("conv({}, k = {}, floor)", n(rng, 1, 8), n(rng, 1, 5)),
        2 => "relu".into(),
        3 => format!("lrn(n = {}, alpha = 1e-4, beta = 0.75, k = 2)", n(rng, 1, 7)),
        4 => format!("maxpool(k = {}, s = {}, p = {})", n(rng, 1, 4), n(rng, 1, 3), n(rng, 0, 2)),
        5 => format!("maxpool(k = {}, s = 2, floor)", n(rng, 1, 3)),
        6 => format!("linear({})", n(rng, 0, 20)),
        7 => format!("dropout({}.{})", n(rng, 0, 1), n(rng, 0, 9)),
        _ => ["softmax", "tanh", "conv(3, q = 1)", "linear(4, bias = false)"][rng.random_range(0..4)].into(),
    }
}

#[test]
fn random_declarations_never_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2012);
    let (mut ok, mut failed) = (0, 0);
    for case in 0..400 {
        let mut src = format!(
            "pub Net{case} {{ input: [{}, {}, {}], max_batch: {},",
            rng.random_range(0..4),
            rng.random_range(1..24),
            rng.random_range(1..24),
            rng.random_range(1..9)
        );
        for layer in 0..rng.random_range(1..5) {
            let ops: Vec<String> = (0..rng.random_range(1..4)).map(|_| random_op(&mut rng)).collect();
            src.push_str(&format!(" l{layer}: {},", ops.join(" -> ")));
        }
        src.push('}');
        match std::panic::catch_unwind(|| alexnet_compiler::compile_str(&src)) {
            Err(_) => panic!("the compiler panicked on:\n{src}"),
            Ok(Ok(compiled)) => {
                ok += 1;
                for k in compiled.plan.kernels.iter() {
                    alexnet_compiler::codegen::validate_wgsl(&k.name, &k.wgsl).unwrap();
                }
            }
            Ok(Err(errors)) => {
                failed += 1;
                assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    assert!(!e.message.is_empty() && !e.message.ends_with('.'), "bad message {:?} for:\n{src}", e.message);
                    assert!(!e.message.contains("internal compiler error"), "{}\n{src}", e.message);
                }
            }
        }
    }
    // Both outcomes must occur, or the generator is not exercising the compiler.
    assert!(ok > 20 && failed > 20, "{ok} compiled, {failed} failed");
}
