//! The `alexnet!` proc macro: a thin shell that hands its tokens to `alexnet-compiler` and
//! writes the result as Rust. It does no checking of its own and writes no files.
//!
//! On success it expands to a unit struct with an associated `PLAN` constant (kernels, plan,
//! parameters, IR dump and DOT graph) and an `::alexnet::Model` impl. On failure it emits every
//! error at its span plus the same struct with no impl, so user code does not cascade.

use alexnet_plan as plan;
use proc_macro2::TokenStream;
use quote::quote;

/// Declares an AlexNet-style network; see the `alexnet` crate for the syntax.
#[proc_macro]
pub fn alexnet(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

fn expand(input: TokenStream) -> TokenStream {
    match alexnet_compiler::compile(input.clone()) {
        Ok(compiled) => {
            let net = &compiled.net;
            let (vis, name) = (&net.vis, &net.name);
            let doc = &net.doc;
            let plan = plan_tokens(&compiled.plan);
            quote! {
                #[doc = #doc]
                #[derive(Clone, Copy, Debug, Default)]
                #vis struct #name;

                impl #name {
                    /// The execution plan compiled from the declaration at build time.
                    pub const PLAN: ::alexnet::__private::Plan = #plan;
                }

                impl ::alexnet::Model for #name {
                    const PLAN: &'static ::alexnet::__private::Plan = &#name::PLAN;
                }
            }
        }
        Err(errors) => {
            let errors = errors
                .0
                .iter()
                .map(|e| syn::Error::new(e.span, &e.message).to_compile_error());
            let stub = stub(input);
            quote! { #(#errors)* #stub }
        }
    }
}

/// A bare struct with the declared name, so uses of it do not add errors of their own.
fn stub(input: TokenStream) -> TokenStream {
    struct Head(syn::Visibility, syn::Ident);
    impl syn::parse::Parse for Head {
        fn parse(input: syn::parse::ParseStream) -> syn::Result<Self> {
            input.call(syn::Attribute::parse_outer)?;
            let vis = input.parse()?;
            let name = input.parse()?;
            input.parse::<TokenStream>()?;
            Ok(Head(vis, name))
        }
    }
    match syn::parse2::<Head>(input) {
        Ok(Head(vis, name)) => quote! { #vis struct #name; },
        Err(_) => TokenStream::new(),
    }
}

fn cow_str(s: &str) -> TokenStream {
    quote! { ::std::borrow::Cow::Borrowed(#s) }
}

fn cow_slice(items: impl IntoIterator<Item = TokenStream>) -> TokenStream {
    let items = items.into_iter();
    quote! { ::std::borrow::Cow::Borrowed(&[#(#items),*]) }
}

fn u32s(v: &[u32]) -> TokenStream {
    cow_slice(v.iter().map(|d| quote! { #d }))
}

fn opt_u32(v: Option<u32>) -> TokenStream {
    match v {
        Some(v) => quote! { ::std::option::Option::Some(#v) },
        None => quote! { ::std::option::Option::None },
    }
}

/// Writes `plan` as a constant expression of `::alexnet::__private` types.
fn plan_tokens(p: &plan::Plan) -> TokenStream {
    let (name, doc, ir, dot) = (
        cow_str(&p.name),
        cow_str(&p.doc),
        cow_str(&p.ir),
        cow_str(&p.dot),
    );
    let [c, h, w] = p.input;
    let (devices, max_batch, micro_batch) = (p.devices, p.max_batch, p.micro_batch);
    let activations = cow_slice(p.activations.iter().map(|a| {
        let (name, shape) = (cow_str(&a.name), u32s(&a.shape));
        quote! { ::alexnet::__private::Activation { name: #name, shape: #shape } }
    }));
    let params = cow_slice(p.params.iter().map(|q| {
        let (name, layer, shape) = (cow_str(&q.name), cow_str(&q.layer), u32s(&q.shape));
        let layout = match q.layout {
            plan::Layout::Oihw => quote! { Oihw },
            plan::Layout::Oi => quote! { Oi },
            plan::Layout::O => quote! { O },
        };
        let init = match q.init {
            plan::Init::Normal { std } => {
                quote! { ::alexnet::__private::Init::Normal { std: #std } }
            }
            plan::Init::Constant { value } => {
                quote! { ::alexnet::__private::Init::Constant { value: #value } }
            }
        };
        let parts = cow_slice(q.parts.iter().map(|pt| {
            let (start, rows) = (pt.start, pt.rows);
            quote! { ::alexnet::__private::Part { start: #start, rows: #rows } }
        }));
        quote! {
            ::alexnet::__private::Param {
                name: #name, layer: #layer, shape: #shape,
                layout: ::alexnet::__private::Layout::#layout, init: #init, parts: #parts,
            }
        }
    }));
    let nodes = cow_slice(p.nodes.iter().map(|n| {
        let (layer, input, output, device) = (cow_str(&n.layer), n.input, n.output, n.device);
        let op = node_op(&n.op);
        quote! { ::alexnet::__private::Node { layer: #layer, op: #op, input: #input, output: #output, device: #device } }
    }));
    let kernels = cow_slice(p.kernels.iter().map(|k| {
        let (name, layer, wgsl, entry) = (cow_str(&k.name), cow_str(&k.layer), cow_str(&k.wgsl), cow_str(&k.entry_point));
        let (node, wg, threads) = (k.node, k.workgroup_size, k.threads_per_image);
        let bindings = cow_slice(k.bindings.iter().map(|b| match *b {
            plan::Binding::Uniform => quote! { ::alexnet::__private::Binding::Uniform },
            plan::Binding::Activation { index, write } => quote! { ::alexnet::__private::Binding::Activation { index: #index, write: #write } },
            plan::Binding::Param { index, part } => quote! { ::alexnet::__private::Binding::Param { index: #index, part: #part } },
            plan::Binding::ParamMut { index, part } => quote! { ::alexnet::__private::Binding::ParamMut { index: #index, part: #part } },
            plan::Binding::Grad { index, write } => quote! { ::alexnet::__private::Binding::Grad { index: #index, write: #write } },
            plan::Binding::ParamGrad { index, part, write } => {
                quote! { ::alexnet::__private::Binding::ParamGrad { index: #index, part: #part, write: #write } }
            }
            plan::Binding::Momentum { index, part } => quote! { ::alexnet::__private::Binding::Momentum { index: #index, part: #part } },
            plan::Binding::Labels => quote! { ::alexnet::__private::Binding::Labels },
            plan::Binding::Loss => quote! { ::alexnet::__private::Binding::Loss },
            plan::Binding::Partials { index, part, slices, write } => quote! { ::alexnet::__private::Binding::Partials { index: #index, part: #part, slices: #slices, write: #write } },
        }));
        let role = match k.role {
            plan::Role::Forward => quote! { Forward },
            plan::Role::Dropout => quote! { Dropout },
            plan::Role::Loss => quote! { Loss },
            plan::Role::Backward(wrt) => {
                let wrt = match wrt {
                    plan::Wrt::Input => quote! { Input },
                    plan::Wrt::Weight => quote! { Weight },
                    plan::Wrt::Bias => quote! { Bias },
                };
                quote! { Backward(::alexnet::__private::Wrt::#wrt) }
            }
            plan::Role::Update => quote! { Update },
        };
        let dispatch = dispatch_tokens(k.dispatch);
        let covers = u32s(&k.covers);
        let algo = algo_tokens(&k.algo);
        let cost = cost_tokens(k.cost);
        let variants = cow_slice(k.variants.iter().map(|v| {
            let target = target_tokens(v.target);
            let (algo, cost, wgsl, wg, threads, dispatch) =
                (algo_tokens(&v.algo), cost_tokens(v.cost), cow_str(&v.wgsl), v.workgroup_size, v.threads_per_image, dispatch_tokens(v.dispatch));
            quote! {
                ::alexnet::__private::Variant {
                    target: #target, algo: #algo, cost: #cost, wgsl: #wgsl,
                    workgroup_size: #wg, threads_per_image: #threads, dispatch: #dispatch,
                }
            }
        }));
        quote! {
            ::alexnet::__private::Kernel {
                name: #name, layer: #layer, node: #node, covers: #covers, algo: #algo,
                cost: #cost,
                wgsl: #wgsl, entry_point: #entry,
                workgroup_size: #wg, threads_per_image: #threads, dispatch: #dispatch, bindings: #bindings,
                role: ::alexnet::__private::Role::#role,
                variants: #variants,
            }
        }
    }));
    let layers = cow_slice(p.layers.iter().map(|l| {
        let (name, output) = (cow_str(&l.name), u32s(&l.output));
        let (params, macs, bytes) = (l.params, l.macs, l.activation_bytes);
        let place = place(l.place);
        let [on0, on1] = l.activation_bytes_on;
        quote! {
            ::alexnet::__private::LayerStats {
                name: #name, output: #output, params: #params, macs: #macs, activation_bytes: #bytes,
                place: #place, activation_bytes_on: [#on0, #on1],
            }
        }
    }));
    let exchanges = cow_slice(p.exchanges.iter().map(|e| {
        let (reader, to, bytes) = (cow_str(&e.reader), e.to, e.bytes_per_image);
        let kind = match e.kind {
            plan::ExchangeKind::Gather => quote! { Gather },
            plan::ExchangeKind::Halo { channels } => quote! { Halo { channels: #channels } },
            plan::ExchangeKind::Whole => quote! { Whole },
        };
        quote! {
            ::alexnet::__private::Exchange { reader: #reader, to: #to, kind: ::alexnet::__private::ExchangeKind::#kind, bytes_per_image: #bytes }
        }
    }));
    let plan::Limits {
        max_storage_buffer_binding_size: l_bind,
        max_compute_workgroups_per_dimension: l_wg,
        max_storage_buffers_per_shader_stage: l_sb,
        max_compute_invocations_per_workgroup: l_inv,
        max_dispatch_flops: l_flops,
    } = p.limits;
    let (input_act, logits) = (p.input_activation, p.logits_activation);
    let probs = opt_u32(p.probs_activation);
    let fusion = fusion_tokens(p.fusion);
    let (inference, training, inspect) = (
        program(&p.inference),
        program(&p.training),
        program(&p.inspect),
    );
    let towers = towers_tokens(&p.towers);
    let tower_training = towers_tokens(&p.tower_training);
    let inference_variants = cow_slice(p.inference_variants.iter().map(|v| {
        let (target, fusion, program) = (target_tokens(v.target), fusion_tokens(v.fusion), program(&v.program));
        quote! { ::alexnet::__private::ProgramVariant { target: #target, fusion: #fusion, program: #program } }
    }));
    quote! {
        ::alexnet::__private::Plan {
            name: #name,
            doc: #doc,
            input: [#c, #h, #w],
            devices: #devices,
            max_batch: #max_batch,
            micro_batch: #micro_batch,
            activations: #activations,
            params: #params,
            nodes: #nodes,
            kernels: #kernels,
            fusion: #fusion,
            inference: #inference,
            inference_variants: #inference_variants,
            training: #training,
            inspect: #inspect,
            towers: #towers,
            tower_training: #tower_training,
            input_activation: #input_act,
            logits_activation: #logits,
            probs_activation: #probs,
            layers: #layers,
            exchanges: #exchanges,
            limits: ::alexnet::__private::Limits {
                max_storage_buffer_binding_size: #l_bind,
                max_compute_workgroups_per_dimension: #l_wg,
                max_storage_buffers_per_shader_stage: #l_sb,
                max_compute_invocations_per_workgroup: #l_inv,
                max_dispatch_flops: #l_flops,
            },
            ir: #ir,
            dot: #dot,
        }
    }
}

fn target_tokens(t: plan::Target) -> TokenStream {
    match t {
        plan::Target::Gpu => quote! { ::alexnet::__private::Target::Gpu },
        plan::Target::Cpu => quote! { ::alexnet::__private::Target::Cpu },
        plan::Target::CpuSubgroup => quote! { ::alexnet::__private::Target::CpuSubgroup },
    }
}

fn fusion_tokens(f: plan::Fusion) -> TokenStream {
    match f {
        plan::Fusion::Off => quote! { ::alexnet::__private::Fusion::Off },
        plan::Fusion::Epilogue => quote! { ::alexnet::__private::Fusion::Epilogue },
        plan::Fusion::Blocks => quote! { ::alexnet::__private::Fusion::Blocks },
    }
}

fn place(p: plan::Place) -> TokenStream {
    match p {
        plan::Place::Device(d) => quote! { ::alexnet::__private::Place::Device(#d) },
        plan::Place::Both => quote! { ::alexnet::__private::Place::Both },
        plan::Place::Towers => quote! { ::alexnet::__private::Place::Towers },
    }
}

fn extent(e: plan::Extent) -> TokenStream {
    let (per_image, fixed) = (e.per_image, e.fixed);
    quote! { ::alexnet::__private::Extent { per_image: #per_image, fixed: #fixed } }
}

fn gemm_tile(t: plan::GemmTile) -> TokenStream {
    let (m, n, k, rm, rn) = (t.m, t.n, t.k, t.rm, t.rn);
    let staging = match t.staging {
        plan::Staging::Workgroup => quote! { Workgroup },
        plan::Staging::Registers => quote! { Registers },
        plan::Staging::Subgroup { lanes } => quote! { Subgroup { lanes: #lanes } },
    };
    quote! { ::alexnet::__private::GemmTile { m: #m, n: #n, k: #k, rm: #rm, rn: #rn, staging: ::alexnet::__private::Staging::#staging } }
}

fn dispatch_tokens(d: plan::Dispatch) -> TokenStream {
    match d {
        plan::Dispatch::PerInvocation => quote! { ::alexnet::__private::Dispatch::PerInvocation },
        plan::Dispatch::Fixed => quote! { ::alexnet::__private::Dispatch::Fixed },
        plan::Dispatch::Tiles {
            m_tiles,
            pixels,
            tile_pixels,
        } => {
            quote! { ::alexnet::__private::Dispatch::Tiles { m_tiles: #m_tiles, pixels: #pixels, tile_pixels: #tile_pixels } }
        }
        plan::Dispatch::PerImage { workgroups } => {
            quote! { ::alexnet::__private::Dispatch::PerImage { workgroups: #workgroups } }
        }
    }
}

fn cost_tokens(c: plan::Cost) -> TokenStream {
    let (flops, read, written) = (extent(c.flops), extent(c.read), extent(c.written));
    quote! { ::alexnet::__private::Cost { flops: #flops, read: #read, written: #written } }
}

fn algo_tokens(a: &plan::Algo) -> TokenStream {
    match *a {
        plan::Algo::PerElement { threads } => {
            quote! { ::alexnet::__private::Algo::PerElement { threads: #threads } }
        }
        plan::Algo::Vec4 { threads } => {
            quote! { ::alexnet::__private::Algo::Vec4 { threads: #threads } }
        }
        plan::Algo::RowReduce { threads } => {
            quote! { ::alexnet::__private::Algo::RowReduce { threads: #threads } }
        }
        plan::Algo::PerImage { threads } => {
            quote! { ::alexnet::__private::Algo::PerImage { threads: #threads } }
        }
        plan::Algo::ChannelScan { threads, side } => {
            quote! { ::alexnet::__private::Algo::ChannelScan { threads: #threads, side: #side } }
        }
        plan::Algo::PoolTile { threads } => {
            quote! { ::alexnet::__private::Algo::PoolTile { threads: #threads } }
        }
        plan::Algo::SliceSum { threads, width } => {
            quote! { ::alexnet::__private::Algo::SliceSum { threads: #threads, width: #width } }
        }
        plan::Algo::Gemm(t) => {
            let t = gemm_tile(t);
            quote! { ::alexnet::__private::Algo::Gemm(#t) }
        }
        plan::Algo::ConvBlock {
            tile,
            rows,
            cols,
            out_rows,
            out_cols,
            channels,
        } => {
            let tile = gemm_tile(tile);
            quote! {
                ::alexnet::__private::Algo::ConvBlock {
                    tile: #tile, rows: #rows, cols: #cols, out_rows: #out_rows, out_cols: #out_cols, channels: #channels,
                }
            }
        }
    }
}

fn tensor(t: plan::Tensor) -> TokenStream {
    match t {
        plan::Tensor::Activation(i) => quote! { ::alexnet::__private::Tensor::Activation(#i) },
        plan::Tensor::Grad(i) => quote! { ::alexnet::__private::Tensor::Grad(#i) },
        plan::Tensor::Param { index, part } => {
            quote! { ::alexnet::__private::Tensor::Param { index: #index, part: #part } }
        }
        plan::Tensor::ParamGrad { index, part } => {
            quote! { ::alexnet::__private::Tensor::ParamGrad { index: #index, part: #part } }
        }
        plan::Tensor::Momentum { index, part } => {
            quote! { ::alexnet::__private::Tensor::Momentum { index: #index, part: #part } }
        }
        plan::Tensor::Labels => quote! { ::alexnet::__private::Tensor::Labels },
        plan::Tensor::Loss => quote! { ::alexnet::__private::Tensor::Loss },
        plan::Tensor::Partials {
            index,
            part,
            slices,
        } => quote! {
            ::alexnet::__private::Tensor::Partials { index: #index, part: #part, slices: #slices }
        },
    }
}

fn program(p: &plan::Program) -> TokenStream {
    let steps = cow_slice(p.steps.iter().map(|s| match *s {
        plan::Step::Dispatch(k) => quote! { ::alexnet::__private::Step::Dispatch(#k) },
        plan::Step::Exchange { index, tensor: t } => {
            let t = tensor(t);
            quote! { ::alexnet::__private::Step::Exchange { index: #index, tensor: #t } }
        }
    }));
    let buffers = cow_slice(p.buffers.iter().map(|b| {
        let (name, device, size) = (cow_str(&b.name), b.device, extent(b.size));
        quote! { ::alexnet::__private::Buffer { name: #name, device: #device, size: #size } }
    }));
    let placements = cow_slice(p.placements.iter().map(|pl| {
        let (t, buffer, offset, size) = (tensor(pl.tensor), pl.buffer, extent(pl.offset), extent(pl.size));
        quote! { ::alexnet::__private::Placement { tensor: #t, buffer: #buffer, offset: #offset, size: #size } }
    }));
    quote! { ::alexnet::__private::Program { steps: #steps, buffers: #buffers, placements: #placements } }
}

fn towers_tokens(t: &Option<plan::Towers>) -> TokenStream {
    let Some(t) = t else { return quote! { None } };
    let programs = cow_slice(t.programs.iter().map(program));
    let exchanges = cow_slice(t.exchanges.iter().map(|e| {
        let (t, from, to, offset, bytes) = (tensor(e.tensor), e.from, e.to, e.offset, e.bytes);
        quote! { ::alexnet::__private::TowerExchange { tensor: #t, from: #from, to: #to, offset: #offset, bytes: #bytes } }
    }));
    quote! { Some(::alexnet::__private::Towers { programs: #programs, exchanges: #exchanges }) }
}

fn node_op(op: &plan::NodeOp) -> TokenStream {
    match *op {
        plan::NodeOp::Conv(c) => {
            let plan::ConvNode {
                in_channels,
                in_h,
                in_w,
                out_channels,
                out_h,
                out_w,
                kernel,
                stride,
                pad,
                groups,
                weight,
                bias,
            } = c;
            let bias = opt_u32(bias);
            quote! {
                ::alexnet::__private::NodeOp::Conv(::alexnet::__private::ConvNode {
                    in_channels: #in_channels, in_h: #in_h, in_w: #in_w, out_channels: #out_channels,
                    out_h: #out_h, out_w: #out_w, kernel: #kernel, stride: #stride, pad: #pad,
                    groups: #groups, weight: #weight, bias: #bias,
                })
            }
        }
        plan::NodeOp::Relu => quote! { ::alexnet::__private::NodeOp::Relu },
        plan::NodeOp::Softmax => quote! { ::alexnet::__private::NodeOp::Softmax },
        plan::NodeOp::Dropout(d) => {
            let plan::DropoutNode { p, stream, elems } = d;
            quote! { ::alexnet::__private::NodeOp::Dropout(::alexnet::__private::DropoutNode { p: #p, stream: #stream, elems: #elems }) }
        }
        plan::NodeOp::Lrn(l) => {
            let plan::LrnNode {
                channels,
                h,
                w,
                size,
                alpha,
                beta,
                k,
            } = l;
            quote! {
                ::alexnet::__private::NodeOp::Lrn(::alexnet::__private::LrnNode {
                    channels: #channels, h: #h, w: #w, size: #size, alpha: #alpha, beta: #beta, k: #k,
                })
            }
        }
        plan::NodeOp::MaxPool(p) => {
            let plan::PoolNode {
                channels,
                in_h,
                in_w,
                out_h,
                out_w,
                kernel,
                stride,
                pad,
            } = p;
            quote! {
                ::alexnet::__private::NodeOp::MaxPool(::alexnet::__private::PoolNode {
                    channels: #channels, in_h: #in_h, in_w: #in_w, out_h: #out_h, out_w: #out_w,
                    kernel: #kernel, stride: #stride, pad: #pad,
                })
            }
        }
        plan::NodeOp::Linear(l) => {
            let plan::LinearNode {
                in_features,
                out_features,
                weight,
                bias,
            } = l;
            let bias = opt_u32(bias);
            quote! {
                ::alexnet::__private::NodeOp::Linear(::alexnet::__private::LinearNode {
                    in_features: #in_features, out_features: #out_features, weight: #weight, bias: #bias,
                })
            }
        }
    }
}
