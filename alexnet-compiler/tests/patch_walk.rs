//! The subgroup form of a convolution's patch GEMM steps the kernel's columns in its loop,
//! which multiplies its iterations by K; where that would reach the software adapters' loop
//! limit it unrolls them instead, and the plan's verifier counts what the shader runs.

use alexnet_compiler::plan::Target;

/// The `cpu-sg8` WGSL of the forward kernel of layer `layer`.
fn subgroup_forward(compiled: &alexnet_compiler::Compiled, layer: &str) -> String {
    let kernel = compiled
        .plan
        .kernels
        .iter()
        .find(|k| k.name.starts_with(&format!("{layer}_")) && k.name.ends_with("fwd"))
        .unwrap_or_else(|| panic!("no forward kernel of {layer}"));
    kernel
        .variants
        .iter()
        .find(|v| v.target == Target::CpuSubgroup)
        .unwrap_or_else(|| panic!("{} has no cpu-sg8 variant", kernel.name))
        .wgsl
        .to_string()
}

#[test]
fn subgroup_patch_loops_step_kx_unless_that_reaches_the_loop_limit() {
    // c1: 16 × 3 × 3 = 144 steps, stepped one (channel, ky, kx) per iteration. c2: 8,192 × 3 ×
    // 3 = 73,728 steps, over the 65,535 a software adapter allows one invocation, so its loop
    // walks (channel, ky) with kx unrolled: 24,576 iterations.
    let compiled = alexnet_compiler::compile_str(
        "pub Deep { input: [16, 5, 5], c1: conv(8192, k = 3, p = 1) -> relu, c2: conv(4, k = 3), fc: linear(3) }",
    )
    .unwrap_or_else(|e| panic!("{}", e.render("test")));
    let c1 = subgroup_forward(&compiled, "c1");
    assert!(
        c1.contains("for (var q = 0u; q < ICG * K * K; q++)"),
        "{c1}"
    );
    let c2 = subgroup_forward(&compiled, "c2");
    assert!(c2.contains("for (var q = 0u; q < ICG * K; q++)"), "{c2}");
    assert!(!c2.contains("q < ICG * K * K"), "{c2}");
}
