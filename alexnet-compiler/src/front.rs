//! Front end: parses the `alexnet!` DSL into an AST with spans.
//!
//! Syntax errors stop the parse (syn's way); everything that parses but is out of range —
//! an unknown layer kind or argument, a zero size, a dropout rate outside `[0, 1)` — is
//! collected so that one build reports all of them. Shapes are not checked here: that is
//! `passes::shapes`, which sees the whole graph.
//!
//! ```text
//! /// doc comment
//! pub Name {
//!     input: [C, H, W],            // required
//!     devices: 1 | 2,              // default 1
//!     max_batch: N,                // default 128
//!     binding_limit: BYTES,        // target's max storage binding, default 134217728 (WebGPU)
//!     dispatch_gflop: N,           // most work one dispatch may do (watchdogs), default 32
//!     fusion: on | epilogue | off, // inference kernels per layer block (default), ReLU/softmax epilogues only, or per op
//!     #[weights = "features.0"]    // optional: parameter name prefix (default: the layer name)
//!     #[device = 0]                // optional, with `devices: 2`: the whole layer on one device
//!     layer: op -> op -> ...,
//! }
//! ```

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{bracketed, parenthesized, Ident, LitInt, LitStr, Token};

use crate::error::{Error, Errors};
use crate::ir;

mod kw {
    syn::custom_keyword!(input);
    syn::custom_keyword!(devices);
    syn::custom_keyword!(max_batch);
    syn::custom_keyword!(binding_limit);
    syn::custom_keyword!(dispatch_gflop);
    syn::custom_keyword!(fusion);
}

/// A parsed network declaration.
#[derive(Clone, Debug)]
pub struct NetDef {
    /// The doc comment, lines joined with `\n`.
    pub doc: String,
    /// Visibility of the generated type.
    pub vis: syn::Visibility,
    /// Name of the generated type.
    pub name: Ident,
    /// `[C, H, W]` of one input image.
    pub input: [u32; 3],
    /// Span of the input declaration.
    pub input_span: Span,
    /// Devices to split over (1 or 2).
    pub devices: u32,
    /// Largest batch accepted at run time.
    pub max_batch: u32,
    /// Target's largest storage buffer binding, in bytes.
    pub binding_limit: u64,
    /// Most floating-point operations one dispatch may do.
    pub dispatch_flops: u64,
    /// How much inference fuses each layer's chain of ops.
    pub fusion: alexnet_plan::Fusion,
    /// Layers in order.
    pub layers: Vec<LayerDef>,
}

/// One named layer: a chain of ops.
#[derive(Clone, Debug)]
pub struct LayerDef {
    pub name: Ident,
    /// Parameter name prefix from `#[weights = "..."]`.
    pub weights: Option<String>,
    /// `#[device = N]`: the whole layer on device `N` instead of split into towers.
    pub device: Option<u32>,
    pub ops: Vec<OpDef>,
}

/// One op of a layer's chain.
#[derive(Clone, Debug)]
pub struct OpDef {
    pub span: Span,
    pub kind: OpKind,
}

/// The ops the DSL knows, with their arguments as the IR's attribute types.
#[derive(Clone, Debug)]
pub enum OpKind {
    Conv(ir::Conv),
    Relu,
    Lrn(ir::Lrn),
    MaxPool(ir::MaxPool),
    Linear(ir::Linear),
    Dropout { p: f32 },
    Softmax,
}

/// A parse that found errors in argument values but still yields a network, with the bad
/// ops left out, so later passes can report their errors in the same build.
pub struct Parsed {
    pub net: NetDef,
    pub errors: Vec<Error>,
    /// False when a left-out op could change shapes (conv, maxpool, linear or unknown), so
    /// shape errors downstream would be noise.
    pub shapes_reliable: bool,
}

/// Parses a network declaration from tokens (the macro's input, or a file's text).
/// Syntax errors are fatal; value errors come back in [`Parsed::errors`].
pub fn parse(tokens: TokenStream) -> Result<Parsed, Errors> {
    let raw: RawNet =
        syn::parse2(tokens).map_err(|e| Errors(e.into_iter().map(Error::from).collect()))?;
    Ok(raw.resolve())
}

/// A declaration as written, before argument values are checked.
struct RawNet {
    doc: String,
    vis: syn::Visibility,
    name: Ident,
    input: Option<(Span, Vec<LitInt>)>,
    devices: Option<LitInt>,
    max_batch: Option<LitInt>,
    binding_limit: Option<LitInt>,
    dispatch_gflop: Option<LitInt>,
    fusion: Option<Ident>,
    layers: Vec<RawLayer>,
    errors: Vec<Error>,
}

struct RawLayer {
    name: Ident,
    weights: Option<LitStr>,
    device: Option<LitInt>,
    ops: Vec<RawOp>,
}

struct RawOp {
    name: Ident,
    args: Vec<RawArg>,
}

/// `96`, `k = 11` or `floor`.
enum RawArg {
    Positional(syn::Lit),
    Named(Ident, syn::Lit),
    Flag(Ident),
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) {
            let name: Ident = input.parse()?;
            if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                let neg = input.parse::<Option<Token![-]>>()?;
                let lit: syn::Lit = input.parse()?;
                if let Some(minus) = neg {
                    return Err(syn::Error::new(
                        minus.span,
                        format!("`{name}` must not be negative"),
                    ));
                }
                Ok(RawArg::Named(name, lit))
            } else {
                Ok(RawArg::Flag(name))
            }
        } else {
            if input.peek(Token![-]) {
                return Err(input.error("expected a non-negative number"));
            }
            Ok(RawArg::Positional(input.parse()?))
        }
    }
}

fn doc_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if nv.path.is_ident("doc") {
                if let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) = &nv.value
                {
                    lines.push(s.value().trim().to_string());
                }
            }
        }
    }
    lines.join("\n")
}

impl Parse for RawNet {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let vis: syn::Visibility = input.parse()?;
        let name: Ident = input.parse()?;
        let body;
        syn::braced!(body in input);
        let mut net = RawNet {
            doc: doc_of(&attrs),
            vis,
            name,
            input: None,
            devices: None,
            max_batch: None,
            binding_limit: None,
            dispatch_gflop: None,
            fusion: None,
            layers: Vec::new(),
            errors: Vec::new(),
        };
        for attr in &attrs {
            if !attr.path().is_ident("doc") {
                net.errors.push(Error::new(
                    attr.span(),
                    "only doc comments may stand before a network",
                ));
            }
        }
        while !body.is_empty() {
            let attrs = body.call(syn::Attribute::parse_outer)?;
            let lookahead = body.lookahead1();
            if lookahead.peek(kw::input) {
                let kw: kw::input = body.parse()?;
                body.parse::<Token![:]>()?;
                let dims;
                bracketed!(dims in body);
                let list = Punctuated::<LitInt, Token![,]>::parse_terminated(&dims)?;
                if net.input.is_some() {
                    net.errors
                        .push(Error::new(kw.span, "`input` is declared twice"));
                }
                net.input = Some((
                    kw.span.join(dims.span()).unwrap_or(kw.span),
                    list.into_iter().collect(),
                ));
            } else if lookahead.peek(kw::devices) {
                let kw: kw::devices = body.parse()?;
                body.parse::<Token![:]>()?;
                let v = body.parse()?;
                net.set_field(kw.span, "devices", v, |n| &mut n.devices);
            } else if lookahead.peek(kw::max_batch) {
                let kw: kw::max_batch = body.parse()?;
                body.parse::<Token![:]>()?;
                let v = body.parse()?;
                net.set_field(kw.span, "max_batch", v, |n| &mut n.max_batch);
            } else if lookahead.peek(kw::binding_limit) {
                let kw: kw::binding_limit = body.parse()?;
                body.parse::<Token![:]>()?;
                let v = body.parse()?;
                net.set_field(kw.span, "binding_limit", v, |n| &mut n.binding_limit);
            } else if lookahead.peek(kw::dispatch_gflop) {
                let kw: kw::dispatch_gflop = body.parse()?;
                body.parse::<Token![:]>()?;
                let v = body.parse()?;
                net.set_field(kw.span, "dispatch_gflop", v, |n| &mut n.dispatch_gflop);
            } else if lookahead.peek(kw::fusion) {
                let kw: kw::fusion = body.parse()?;
                body.parse::<Token![:]>()?;
                let v: Ident = body.parse()?;
                if net.fusion.is_some() {
                    net.errors
                        .push(Error::new(kw.span, "`fusion` is declared twice"));
                }
                net.fusion = Some(v);
            } else if lookahead.peek(Ident) {
                let layer = RawLayer::parse_with(&body, &attrs, &mut net.errors)?;
                net.layers.push(layer);
            } else {
                return Err(lookahead.error());
            }
            if body.is_empty() {
                break;
            }
            body.parse::<Token![,]>()?;
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the network's closing brace"));
        }
        Ok(net)
    }
}

impl RawNet {
    fn set_field(
        &mut self,
        span: Span,
        what: &str,
        value: LitInt,
        slot: impl Fn(&mut Self) -> &mut Option<LitInt>,
    ) {
        if slot(self).is_some() {
            self.errors
                .push(Error::new(span, format!("`{what}` is declared twice")));
        }
        *slot(self) = Some(value);
    }
}

impl RawLayer {
    fn parse_with(
        input: ParseStream,
        attrs: &[syn::Attribute],
        errors: &mut Vec<Error>,
    ) -> syn::Result<Self> {
        let (mut weights, mut device) = (None, None);
        for attr in attrs {
            if attr.path().is_ident("doc") {
                continue;
            }
            match &attr.meta {
                syn::Meta::NameValue(nv) if nv.path.is_ident("weights") => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => weights = Some(s.clone()),
                    other => errors.push(Error::new(other.span(), "expected a string: #[weights = \"features.0\"]")),
                },
                syn::Meta::NameValue(nv) if nv.path.is_ident("device") => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(i), .. }) => device = Some(i.clone()),
                    other => errors.push(Error::new(other.span(), "expected a device index: #[device = 0]")),
                },
                _ => errors.push(Error::new(attr.span(), "unknown layer attribute (expected `#[weights = \"prefix\"]` or `#[device = N]`)")),
            }
        }
        let name: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let mut ops = Vec::new();
        loop {
            let op_name: Ident = input.parse().map_err(|e| {
                syn::Error::new(e.span(), "expected one of `conv`, `relu`, `lrn`, `maxpool`, `linear`, `dropout`, `softmax`")
            })?;
            let mut args = Vec::new();
            if input.peek(syn::token::Paren) {
                let inner;
                parenthesized!(inner in input);
                args = Punctuated::<RawArg, Token![,]>::parse_terminated(&inner)?
                    .into_iter()
                    .collect();
            }
            ops.push(RawOp {
                name: op_name,
                args,
            });
            if input.peek(Token![->]) {
                input.parse::<Token![->]>()?;
            } else {
                break;
            }
        }
        Ok(RawLayer {
            name,
            weights,
            device,
            ops,
        })
    }
}

impl RawNet {
    fn resolve(self) -> Parsed {
        let mut errors = self.errors;
        let input = match self.input {
            None => {
                errors.push(Error::new(self.name.span(), "missing `input: [C, H, W]`"));
                ([1, 1, 1], self.name.span())
            }
            Some((span, dims)) => {
                if dims.len() != 3 {
                    errors.push(Error::new(
                        span,
                        format!("`input` needs 3 dimensions [C, H, W], got {}", dims.len()),
                    ));
                    ([1, 1, 1], span)
                } else {
                    let mut out = [1u32; 3];
                    for (slot, lit) in out.iter_mut().zip(&dims) {
                        *slot = positive(lit, "input dimension", &mut errors).unwrap_or(1);
                    }
                    (out, span)
                }
            }
        };
        let devices = match &self.devices {
            None => 1,
            Some(lit) => match lit.base10_parse::<u32>() {
                Ok(d @ (1 | 2)) => d,
                _ => {
                    errors.push(Error::new(lit.span(), "`devices` must be 1 or 2"));
                    1
                }
            },
        };
        let max_batch = match &self.max_batch {
            None => 128,
            Some(lit) => positive(lit, "max_batch", &mut errors).unwrap_or(1),
        };
        let binding_limit = match &self.binding_limit {
            None => alexnet_plan::Limits::WEBGPU_DEFAULT.max_storage_buffer_binding_size,
            Some(lit) => match lit.base10_parse::<u64>() {
                Ok(v) if v >= 4 => v,
                _ => {
                    errors.push(Error::new(
                        lit.span(),
                        "`binding_limit` must be at least 4 bytes",
                    ));
                    4
                }
            },
        };
        let dispatch_flops = match &self.dispatch_gflop {
            None => alexnet_plan::Limits::DEFAULT_DISPATCH_FLOPS,
            Some(lit) => match lit.base10_parse::<u64>() {
                Ok(v @ 1..=1_000_000) => v * 1_000_000_000,
                _ => {
                    errors.push(Error::new(
                        lit.span(),
                        "`dispatch_gflop` must be in 1..=1000000 (GFLOP per dispatch)",
                    ));
                    alexnet_plan::Limits::DEFAULT_DISPATCH_FLOPS
                }
            },
        };
        let fusion = match &self.fusion {
            None => alexnet_plan::Fusion::Blocks,
            Some(v) if v == "on" => alexnet_plan::Fusion::Blocks,
            Some(v) if v == "epilogue" => alexnet_plan::Fusion::Epilogue,
            Some(v) if v == "off" => alexnet_plan::Fusion::Off,
            Some(v) => {
                errors.push(Error::new(
                    v.span(),
                    format!("`fusion` must be `on`, `epilogue` or `off`, not `{v}`"),
                ));
                alexnet_plan::Fusion::Blocks
            }
        };
        if self.layers.is_empty() {
            errors.push(Error::new(
                self.name.span(),
                "a network needs at least one layer",
            ));
        }
        let mut layers = Vec::new();
        let mut shapes_reliable = true;
        for (i, raw) in self.layers.iter().enumerate() {
            if self.layers[..i].iter().any(|l| l.name == raw.name) {
                errors.push(Error::new(
                    raw.name.span(),
                    format!("duplicate layer name `{}`", raw.name),
                ));
            }
            let mut ops = Vec::new();
            for op in &raw.ops {
                let before = errors.len();
                let resolved = resolve_op(&raw.name, op, &mut errors);
                if errors.len() == before {
                    ops.extend(resolved);
                } else if !matches!(
                    resolved.map(|o| o.kind),
                    Some(OpKind::Relu | OpKind::Lrn(_) | OpKind::Dropout { .. } | OpKind::Softmax)
                ) {
                    shapes_reliable = false;
                }
            }
            let device = raw.device.as_ref().and_then(|lit| match lit.base10_parse::<u32>() {
                Ok(d) if d < devices => Some(d),
                _ if devices == 1 => {
                    errors.push(Error::new(lit.span(), format!("{}: `#[device = {lit}]` needs `devices: 2` (the network runs on one device)", raw.name)));
                    None
                }
                _ => {
                    errors.push(Error::new(lit.span(), format!("{}: `#[device = {lit}]` is out of range: the network has devices 0 and 1", raw.name)));
                    None
                }
            });
            layers.push(LayerDef {
                name: raw.name.clone(),
                weights: raw.weights.as_ref().map(LitStr::value),
                device,
                ops,
            });
        }
        let net = NetDef {
            doc: self.doc,
            vis: self.vis,
            name: self.name,
            input: input.0,
            input_span: input.1,
            devices,
            max_batch,
            binding_limit,
            dispatch_flops,
            fusion,
            layers,
        };
        Parsed {
            net,
            errors,
            shapes_reliable,
        }
    }
}

fn positive(lit: &LitInt, what: &str, errors: &mut Vec<Error>) -> Option<u32> {
    match lit.base10_parse::<u32>() {
        Ok(0) => {
            errors.push(Error::new(
                lit.span(),
                format!("{what} must be positive, got 0"),
            ));
            None
        }
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(Error::new(
                lit.span(),
                format!("{what} must be a positive integer below 2^32"),
            ));
            None
        }
    }
}

/// Reads the arguments of one op against the names it accepts.
struct Args<'a> {
    layer: &'a Ident,
    op: &'a Ident,
    positional: Vec<&'a syn::Lit>,
    named: Vec<(&'a Ident, &'a syn::Lit)>,
    flags: Vec<&'a Ident>,
    errors: &'a mut Vec<Error>,
}

impl<'a> Args<'a> {
    fn new(layer: &'a Ident, op: &'a RawOp, accepted: &[&str], errors: &'a mut Vec<Error>) -> Self {
        let mut args = Args {
            layer,
            op: &op.name,
            positional: Vec::new(),
            named: Vec::new(),
            flags: Vec::new(),
            errors,
        };
        let expected = accepted
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for arg in &op.args {
            let name = match arg {
                RawArg::Positional(lit) => {
                    args.positional.push(lit);
                    continue;
                }
                RawArg::Named(name, lit) => {
                    args.named.push((name, lit));
                    name
                }
                RawArg::Flag(name) => {
                    args.flags.push(name);
                    name
                }
            };
            let text = name.to_string();
            if !accepted.contains(&text.as_str()) {
                let msg = if accepted.is_empty() {
                    format!("{}: `{}` takes no arguments", args.layer, args.op)
                } else {
                    format!(
                        "{}: unknown argument `{text}` of `{}` (expected one of {expected})",
                        args.layer, args.op
                    )
                };
                args.errors.push(Error::new(name.span(), msg));
            } else if args.named.iter().filter(|(n, _)| **n == text).count()
                + args.flags.iter().filter(|n| ***n == text).count()
                > 1
            {
                args.errors.push(Error::new(
                    name.span(),
                    format!("{}: argument `{text}` is given twice", args.layer),
                ));
            }
        }
        args
    }

    fn err(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.errors
            .push(Error::new(span, format!("{}: {msg}", self.layer)));
    }

    fn only_positional(&mut self, max: usize) {
        for lit in self.positional.clone().into_iter().skip(max) {
            let op = self.op.to_string();
            self.err(
                lit.span(),
                format!("`{op}` takes at most {max} positional argument(s)"),
            );
        }
    }

    fn lit(&self, name: &str) -> Option<&'a syn::Lit> {
        self.named.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
    }

    fn flag(&mut self, name: &str) -> bool {
        if self.flags.iter().any(|f| *f == name) {
            return true;
        }
        match self.lit(name) {
            Some(syn::Lit::Bool(b)) => b.value,
            Some(other) => {
                self.err(other.span(), format!("`{name}` must be `true` or `false`"));
                false
            }
            None => false,
        }
    }

    fn bool_or(&mut self, name: &str, default: bool) -> bool {
        if self.lit(name).is_some() || self.flags.iter().any(|f| *f == name) {
            self.flag(name)
        } else {
            default
        }
    }

    fn uint_lit(&mut self, lit: &syn::Lit, name: &str, min: u32) -> Option<u32> {
        match lit {
            syn::Lit::Int(i) => match i.base10_parse::<u32>() {
                Ok(v) if v >= min => Some(v),
                Ok(v) => {
                    let what = if min == 1 {
                        "positive".to_string()
                    } else {
                        format!("at least {min}")
                    };
                    self.err(lit.span(), format!("`{name}` must be {what}, got {v}"));
                    None
                }
                Err(_) => {
                    self.err(
                        lit.span(),
                        format!("`{name}` must be an integer below 2^32"),
                    );
                    None
                }
            },
            _ => {
                self.err(lit.span(), format!("`{name}` must be an integer"));
                None
            }
        }
    }

    /// A named unsigned argument with a default; `min` is the smallest accepted value.
    fn uint(&mut self, name: &str, default: u32, min: u32) -> u32 {
        match self.lit(name) {
            Some(lit) => self.uint_lit(lit, name, min).unwrap_or(default.max(1)),
            None => default,
        }
    }

    /// The first positional argument, required, as a positive integer.
    fn first_uint(&mut self, what: &str) -> u32 {
        match self.positional.first().copied() {
            Some(lit) => self.uint_lit(lit, what, 1).unwrap_or(1),
            None => {
                let op = self.op.to_string();
                self.err(
                    self.op.span(),
                    format!("`{op}` needs the number of {what} first, e.g. `{op}(96, ...)`"),
                );
                1
            }
        }
    }

    fn float(&mut self, name: &str, default: Option<f32>) -> f32 {
        match self.lit(name) {
            Some(syn::Lit::Float(f)) => f.base10_parse::<f32>().unwrap_or(0.0),
            Some(syn::Lit::Int(i)) => i.base10_parse::<f32>().unwrap_or(0.0),
            Some(other) => {
                self.err(other.span(), format!("`{name}` must be a number"));
                default.unwrap_or(1.0)
            }
            None => match default {
                Some(v) => v,
                None => {
                    let op = self.op.to_string();
                    self.err(self.op.span(), format!("`{op}` needs `{name} = ...`"));
                    1.0
                }
            },
        }
    }
}

fn resolve_op(layer: &Ident, op: &RawOp, errors: &mut Vec<Error>) -> Option<OpDef> {
    let span = op.name.span();
    let kind = match op.name.to_string().as_str() {
        "conv" => {
            let mut a = Args::new(
                layer,
                op,
                &["k", "s", "p", "groups", "bias", "floor"],
                errors,
            );
            a.only_positional(1);
            let out_channels = a.first_uint("output channels");
            let kernel = match a.lit("k") {
                Some(_) => a.uint("k", 1, 1),
                None => {
                    a.err(span, "`conv` needs a kernel size `k = ...`");
                    1
                }
            };
            OpKind::Conv(ir::Conv {
                out_channels,
                kernel,
                stride: a.uint("s", 1, 1),
                pad: a.uint("p", 0, 0),
                groups: a.uint("groups", 1, 1),
                bias: a.bool_or("bias", true),
                floor: a.flag("floor"),
            })
        }
        "relu" => {
            Args::new(layer, op, &[], errors).only_positional(0);
            OpKind::Relu
        }
        "softmax" => {
            Args::new(layer, op, &[], errors).only_positional(0);
            OpKind::Softmax
        }
        "lrn" => {
            let mut a = Args::new(layer, op, &["n", "alpha", "beta", "k"], errors);
            a.only_positional(0);
            let size = a.uint("n", 5, 1);
            let alpha = a.float("alpha", Some(1e-4));
            let beta = a.float("beta", Some(0.75));
            let k = a.float("k", Some(2.0));
            if k <= 0.0 {
                let s = a.lit("k").map_or(span, |l| l.span());
                a.err(
                    s,
                    "lrn `k` must be positive so the denominator never vanishes",
                );
            }
            OpKind::Lrn(ir::Lrn {
                size,
                alpha,
                beta,
                k,
            })
        }
        "maxpool" => {
            let mut a = Args::new(layer, op, &["k", "s", "p", "floor"], errors);
            a.only_positional(0);
            let kernel = match a.lit("k") {
                Some(_) => a.uint("k", 1, 1),
                None => {
                    a.err(span, "`maxpool` needs a kernel size `k = ...`");
                    1
                }
            };
            let stride = a.uint("s", kernel, 1);
            let pad = a.uint("p", 0, 0);
            if pad * 2 >= kernel.max(1) && pad > 0 {
                let s = a.lit("p").map_or(span, |l| l.span());
                a.err(
                    s,
                    format!("maxpool padding {pad} must be less than half the kernel {kernel}"),
                );
            }
            OpKind::MaxPool(ir::MaxPool {
                kernel,
                stride,
                pad,
                floor: a.flag("floor"),
            })
        }
        "linear" => {
            let mut a = Args::new(layer, op, &["bias"], errors);
            a.only_positional(1);
            let out_features = a.first_uint("output features");
            OpKind::Linear(ir::Linear {
                out_features,
                bias: a.bool_or("bias", true),
            })
        }
        "dropout" => {
            let mut a = Args::new(layer, op, &[], errors);
            a.only_positional(1);
            let p = match a.positional.first().copied() {
                Some(syn::Lit::Float(f)) => f.base10_parse::<f32>().ok(),
                Some(syn::Lit::Int(i)) => i.base10_parse::<f32>().ok(),
                Some(other) => {
                    a.err(other.span(), "dropout rate must be a number");
                    None
                }
                None => Some(0.5),
            };
            match p {
                Some(p) if (0.0..1.0).contains(&p) => OpKind::Dropout { p },
                Some(p) => {
                    let s = a.positional.first().map_or(span, |l| l.span());
                    a.err(s, format!("dropout rate must be in [0, 1), got {p:?}"));
                    OpKind::Dropout { p: 0.0 }
                }
                None => OpKind::Dropout { p: 0.0 },
            }
        }
        other => {
            errors.push(Error::new(
                span,
                format!("{layer}: unknown layer `{other}` (expected one of `conv`, `relu`, `lrn`, `maxpool`, `linear`, `dropout`, `softmax`)"),
            ));
            return None;
        }
    };
    Some(OpDef { span, kind })
}
