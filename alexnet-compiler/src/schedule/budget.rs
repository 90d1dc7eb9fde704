//! The dispatch budget: the micro-batch is cut until every dispatch of every program, in every
//! kernel variant, does at most the target's `max_dispatch_flops` (so that no dispatch of a
//! large batch runs long enough for a desktop GPU's watchdog to reset the device) and loops
//! fewer than [`algo::LOOP_LIMIT`] times per invocation (so that the software adapters finish
//! every loop). Batches larger than the micro-batch run as several passes at run time.

use super::algo;
use crate::error::{Error, Errors};
use crate::ir::Graph;
use alexnet_plan::{Plan, Target};
use std::collections::BTreeMap;

/// Lowers `plan.micro_batch` until every kernel fits the budget. A kernel over it for one image
/// is an error at its layer (nothing smaller than an image is dispatched): one per layer and
/// measure, naming the layer's worst kernel.
pub fn fit(plan: &mut Plan, graph: &Graph) -> Result<(), Errors> {
    let budget = plan.limits.max_dispatch_flops;
    // Per layer: the kernel with the most FLOPs over the budget, and with the longest loop.
    let mut over: BTreeMap<&str, [Option<(u64, String)>; 2]> = BTreeMap::new();
    let mut batch = u64::from(plan.micro_batch.max(1));
    for original in plan.kernels.iter() {
        for target in Target::ALL {
            let kernel = original.for_target(target);
            let loops = |b: u64| algo::loop_iterations(plan, &kernel, b).unwrap_or(0);
            let fits = |b: u64| kernel.cost.flops.at(b) <= budget && loops(b) < algo::LOOP_LIMIT;
            if !fits(1) {
                let worst = over.entry(&*original.layer).or_default();
                for (slot, amount, limit) in [
                    (0, kernel.cost.flops.at(1), budget + 1),
                    (1, loops(1), algo::LOOP_LIMIT),
                ] {
                    if amount >= limit && worst[slot].as_ref().is_none_or(|(a, _)| amount > *a) {
                        worst[slot] = Some((amount, kernel.name.to_string()));
                    }
                }
                continue;
            }
            if !fits(batch) {
                // Both measures grow with the batch: the largest batch that fits, by bisection.
                let (mut lo, mut hi) = (1, batch);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if fits(mid) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                batch = lo;
            }
        }
    }
    let mut errors = Vec::new();
    for (layer, [flops, loops]) in over {
        let span = graph
            .g
            .node_weights()
            .find(|n| n.layer == layer)
            .map_or_else(proc_macro2::Span::call_site, |n| n.span);
        if let Some((flops, kernel)) = flops {
            errors.push(Error::new(
                span,
                format!(
                    "{layer}: kernel `{kernel}` does {:.1} GFLOP for one image, over the dispatch budget of {:.1} GFLOP (raise `dispatch_gflop`)",
                    flops as f64 / 1e9,
                    budget as f64 / 1e9
                ),
            ));
        }
        if let Some((loops, kernel)) = loops {
            errors.push(Error::new(
                span,
                format!("{layer}: kernel `{kernel}` loops {loops} times per invocation for one image; software adapters stop loops at {}", algo::LOOP_LIMIT),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    plan.micro_batch = batch as u32;
    Ok(())
}
