//! The alexnet compiler: a pure library that turns an `alexnet!` declaration into an
//! execution plan with validated WGSL kernels. It does no I/O and knows nothing of wgpu or
//! `proc_macro` (it works on `proc_macro2` tokens, so the CLI can compile a text file too).
//!
//! Modules in processing order:
//! `front` (DSL → AST) → `lower` (AST → IR) → `ir` (the graph) → `passes` (shapes, placement,
//! autodiff) → `valid` (checks, device limits) → `schedule` (kernels, fusion, algorithms,
//! programs and their memory plans, verified) → `codegen` (WGSL, naga-validated).
//! [`compile`] is the table of contents.

pub mod codegen;
pub mod error;
pub mod front;
pub mod ir;
pub mod lower;
pub mod passes;
pub mod schedule;
pub mod valid;

pub use alexnet_plan as plan;
pub use error::{Error, Errors};

use proc_macro2::TokenStream;

/// The result of compiling one network.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The parsed declaration (name, visibility and doc of the type to generate).
    pub net: front::NetDef,
    /// The IR after every pass.
    pub graph: ir::Graph,
    /// The execution plan, kernels included.
    pub plan: plan::Plan,
}

/// Compiles a network declaration, reporting every error it finds.
pub fn compile(tokens: TokenStream) -> Result<Compiled, Errors> {
    let front::Parsed {
        net,
        mut errors,
        shapes_reliable,
    } = front::parse(tokens)?;
    let (mut graph, lower_errors) = lower::lower(&net);
    errors.extend(lower_errors);
    if !errors.is_empty() && !shapes_reliable {
        return Err(Errors(errors));
    }
    passes::shapes::infer(&mut graph).map_err(|e| e.after(&errors))?;
    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    let pinned = net
        .layers
        .iter()
        .filter_map(|l| Some((l.name.to_string(), l.device?)))
        .collect();
    passes::place::place(&mut graph, &pinned)?;
    passes::autodiff::differentiate(&mut graph);
    let limits = plan::Limits {
        max_storage_buffer_binding_size: net.binding_limit,
        max_dispatch_flops: net.dispatch_flops,
        ..plan::Limits::WEBGPU_DEFAULT
    };
    let info = valid::validate(
        &graph,
        valid::Target {
            limits,
            max_batch: net.max_batch,
        },
    )?;
    let mut plan = schedule::schedule(&graph, &info, &net.name.to_string(), &net.doc, net.fusion);
    schedule::budget::fit(&mut plan, &graph)?;
    schedule::verify::verify(&plan).map_err(|e| {
        Errors(vec![Error::new(
            proc_macro2::Span::call_site(),
            format!("internal compiler error: {e}"),
        )])
    })?;
    codegen::generate(&mut plan, &info)?;
    Ok(Compiled { net, graph, plan })
}

/// Compiles a declaration written as text (e.g. a `.alexnet` file); errors carry line and column.
pub fn compile_str(source: &str) -> Result<Compiled, Errors> {
    let tokens: TokenStream = source.parse().map_err(|e: proc_macro2::LexError| {
        Errors(vec![Error::new(
            e.span(),
            format!("cannot read the declaration: {e}"),
        )])
    })?;
    compile(tokens)
}
