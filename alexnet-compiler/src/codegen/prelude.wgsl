// Shared by every kernel: the run-time batch size, and the flat index of an invocation in a
// 2-D dispatch (x fastest), so that one dispatch may exceed 65,535 workgroups in x.
struct Params {
    batch: u32,
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * wg + lid;
}
