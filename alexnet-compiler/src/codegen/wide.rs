//! 64-bit loads for software adapters ([`Target::wide_loads`](alexnet_plan::Target::wide_loads)).
//!
//! Debian 12's lavapipe (Mesa 22.3) loads a storage buffer lane by lane: for each of the 8
//! SIMD lanes it checks the lane's mask and the buffer's bound and inserts the loaded word
//! into the vector through the stack, so a load costs per *component*, whatever its width —
//! a `vec4<f32>` costs four 32-bit loads. A `u64` component costs the same as an `f32` one, so
//! reading a `vec4<f32>` array as `array<vec2<u64>>` loads the same 16 bytes in two steps
//! instead of four (stores likewise). Measured on a 2-core AMD EPYC with lavapipe 22.3: an
//! SGD-like kernel (three `vec4` loads, two stores per invocation) 52.8 → 31.8 ms; a loop of
//! scalar `f32` loads against the same bytes as `u64`s 505 → 270 ms.
//!
//! The rewrite is of the finished WGSL, so every generator keeps writing plain `vec4<f32>`
//! arrays: each `array<vec4<f32>>` storage binding becomes `array<vec2<u64>>`, each read
//! `NAME[i]` becomes `unpack_f32x4(NAME[i])` and each store `NAME[i] = v;` becomes
//! `NAME[i] = pack_f32x4(v);`. The bits are the same, so the results are the same to the bit.
//! Any other use of such an array (a compound assignment, a pointer) would be an internal
//! error, which naga's validation of the rewritten kernel catches at build time.

/// The helpers the rewritten kernel calls.
const HELPERS: &str = "\
// This kernel reads its vec4 arrays as pairs of 64-bit words: a software adapter that loads
// lane by lane then loads 16 bytes in two steps instead of four. Needs 64-bit integers.
fn unpack_f32x4(v: vec2<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32(v.x), u32(v.x >> 32u), u32(v.y), u32(v.y >> 32u)));
}
fn pack_f32x4(v: vec4<f32>) -> vec2<u64> {
    let u = bitcast<vec4<u32>>(v);
    return vec2<u64>(u64(u.x) | (u64(u.y) << 32u), u64(u.z) | (u64(u.w) << 32u));
}
";

const VEC4_ARRAY: &str = ": array<vec4<f32>>;";

/// `wgsl` with its `vec4<f32>` storage arrays read and written as `vec2<u64>`s, or `None` when
/// it has no such array.
pub fn widen(wgsl: &str) -> Option<String> {
    let mut names = Vec::new();
    let mut out = String::with_capacity(wgsl.len() + HELPERS.len() + 1024);
    let mut helpers_at = None;
    for line in wgsl.lines() {
        let decl = line
            .strip_prefix("@group(0) @binding(")
            .filter(|_| line.contains("var<storage") && line.ends_with(VEC4_ARRAY));
        match decl {
            Some(_) => {
                let head = line[..line.len() - VEC4_ARRAY.len()].trim_end();
                let name = head.rsplit(' ').next().unwrap_or_default();
                assert!(
                    !name.is_empty() && name.bytes().all(is_ident),
                    "codegen::wide: a binding without a plain name: {line}"
                );
                names.push(name.to_string());
                out.push_str(head);
                out.push_str(": array<vec2<u64>>;\n");
                helpers_at = Some(out.len());
            }
            None => {
                out.push_str(line);
                out.push('\n');
                if line.starts_with("@group(0) @binding(") && helpers_at.is_some() {
                    helpers_at = Some(out.len());
                }
            }
        }
    }
    let at = helpers_at?;
    let (decls, body) = out.split_at(at);
    let body = rewrite(body, &names);
    Some(format!("{decls}{HELPERS}{body}"))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The index of the bracket closing the one at `open`.
fn closing(s: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, &c) in s.iter().enumerate().skip(open) {
        match c {
            b'[' | b'(' => depth += 1,
            b']' | b')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len() - 1
}

/// Where the value of a store starting at `from` ends: its statement's `;` outside brackets,
/// or the bracket closing one the store stands in, or a comment, whichever comes first.
fn statement_end(s: &[u8], from: usize) -> usize {
    let mut depth = 0i32;
    for (i, &c) in s.iter().enumerate().skip(from) {
        match c {
            b'[' | b'(' => depth += 1,
            b']' | b')' if depth == 0 => return i,
            b']' | b')' => depth -= 1,
            b';' if depth == 0 => return i,
            b'/' if s.get(i + 1) == Some(&b'/') => return i,
            _ => {}
        }
    }
    s.len()
}

/// `body` with every access to one of `names` wrapped (see the module's doc).
fn rewrite(body: &str, names: &[String]) -> String {
    let s = body.as_bytes();
    let mut out = String::with_capacity(body.len() * 2);
    let mut i = 0;
    while i < s.len() {
        // Comments are copied as they are.
        if s[i..].starts_with(b"//") {
            let end = body[i..].find('\n').map_or(s.len(), |n| i + n);
            out.push_str(&body[i..end]);
            i = end;
            continue;
        }
        let hit = (i == 0 || !is_ident(s[i - 1]))
            .then(|| {
                names.iter().find(|n| {
                    let n = n.as_bytes();
                    s[i..].starts_with(n) && s.get(i + n.len()) == Some(&b'[')
                })
            })
            .flatten();
        let Some(name) = hit else {
            // Copy one UTF-8 character (comments may hold non-ASCII text).
            let len = body[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&body[i..i + len]);
            i += len;
            continue;
        };
        let open = i + name.len();
        let close = closing(s, open);
        let index = rewrite(&body[open + 1..close], names);
        let access = format!("{name}[{index}]");
        // A store: `NAME[i] = value;` (not `==`).
        let rest = &body[close + 1..];
        let trimmed = rest.trim_start();
        let is_store = trimmed.starts_with('=') && !trimmed.starts_with("==");
        if is_store {
            let eq = close + 1 + (rest.len() - trimmed.len());
            let end = statement_end(s, eq + 1);
            let value = rewrite(body[eq + 1..end].trim(), names);
            out.push_str(&format!("{access} = pack_f32x4({value})"));
            i = end;
        } else {
            out.push_str(&format!("unpack_f32x4({access})"));
            i = close + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "\
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> g: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> p: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    // p[i] = g[i]; comments stay as they are — ×
    let i = gid.x;
    let gp = gid.x + u32(b[i]);
    p[i] = p[i] + g[gp] * 2.0;
    if (p[i].x == g[i].y) { return; }
}
";

    #[test]
    fn reads_unpack_and_stores_pack() {
        let wide = widen(KERNEL).expect("the kernel has vec4 arrays");
        assert!(wide.contains("var<storage, read> g: array<vec2<u64>>;"));
        assert!(wide.contains("var<storage, read_write> p: array<vec2<u64>>;"));
        assert!(wide.contains("var<storage, read> b: array<f32>;"));
        assert!(wide.contains("p[i] = pack_f32x4(unpack_f32x4(p[i]) + unpack_f32x4(g[gp]) * 2.0);"));
        assert!(wide.contains("if (unpack_f32x4(p[i]).x == unpack_f32x4(g[i]).y)"));
        // `gp` and `b[` are not the arrays `g` and `p`.
        assert!(wide.contains("let gp = gid.x + u32(b[i]);"));
        assert!(wide.contains("// p[i] = g[i]; comments stay as they are — ×"));
        // The helpers come after the bindings, once.
        assert_eq!(wide.matches("fn unpack_f32x4").count(), 1);
        assert!(wide.find("fn unpack_f32x4") > wide.find("b: array<f32>"));
    }

    #[test]
    fn a_store_ends_at_its_statement_or_the_bracket_around_it() {
        let kernel = KERNEL.replace(
            "    let i = gid.x;\n",
            "    let i = gid.x;\n    for (var j = 0u; j < 4u; p[j] = p[j] * 2.0) { }\n    p[0] = g[1]; // p[1] = g[2];\n",
        );
        let wide = widen(&kernel).expect("the kernel has vec4 arrays");
        assert!(wide
            .contains("for (var j = 0u; j < 4u; p[j] = pack_f32x4(unpack_f32x4(p[j]) * 2.0)) { }"));
        assert!(wide.contains("p[0] = pack_f32x4(unpack_f32x4(g[1])); // p[1] = g[2];"));
    }

    #[test]
    fn kernels_without_vec4_arrays_stay() {
        let plain = KERNEL.replace("array<vec4<f32>>", "array<f32>");
        assert_eq!(widen(&plain), None);
    }
}
