// Shared by every kernel: the run-time uniforms (the batch size; the rest only matter when
// training), and the flat index of an invocation in a 2-D dispatch (x fastest), so that one
// dispatch may exceed 65,535 workgroups in x.
struct Params {
    batch: u32,
    step: u32,
    seed: u32,
    image0: u32,
    accumulate: u32,
    lr: f32,
    momentum: f32,
    decay: f32,
    grad_scale: f32,
    // 1 when dropout masks apply (training with dropout on).
    dropout: u32,
    pad1: u32,
    pad2: u32,
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * wg + lid;
}
