//! Forward-pass benchmarks of the built-in models on the default adapter (lavapipe on a
//! CPU-only machine; set ALEXNET_BACKEND / ALEXNET_ADAPTER to choose). The CPU reference is
//! measured beside the GPU path on the small net so the two read as a ratio from one run.

use alexnet::models::{AlexNet, AlexNetMini, AlexNetTorchvision};
use alexnet::runtime::reference;
use alexnet::{Gpu, GpuOptions, Plan, Session, TowerSession, Weights};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn forward(c: &mut Criterion, name: &str, plan: &Plan, batches: &[usize]) {
    let gpu = match Gpu::open(&GpuOptions::default(), plan) {
        Ok(gpu) => gpu,
        Err(e) => panic!("benchmarks need a GPU adapter: {e}"),
    };
    let mut group = c.benchmark_group(format!("{name}/{}", gpu.describe()));
    group.sample_size(10);
    let weights = Weights::init(plan, 0);
    for &batch in batches {
        let mut session = Session::new(&gpu, plan, batch as u32).unwrap();
        session.load_weights(&weights).unwrap();
        let input = vec![0.5f32; batch * plan.input_elems()];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("gpu_batch{batch}"), |b| {
            b.iter(|| session.forward(&input, batch).unwrap())
        });
        // A two-tower plan also on two devices: the adapter opened a second time (two logical
        // devices on one machine; set ALEXNET_ADAPTER for another first device).
        if plan.towers.is_some() {
            let other = Gpu::open(&GpuOptions::default(), plan).unwrap();
            let mut towers = TowerSession::new([&gpu, &other], plan, batch as u32).unwrap();
            towers.load_weights(&weights).unwrap();
            group.bench_function(format!("two_devices_batch{batch}"), |b| {
                b.iter(|| towers.forward(&input, batch).unwrap())
            });
        }
    }
    if plan.macs() < 50_000_000 {
        let input = vec![0.5f32; plan.input_elems()];
        group.throughput(Throughput::Elements(1));
        group.bench_function("cpu_reference_batch1", |b| {
            b.iter(|| reference::forward(plan, &weights, &input, 1))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    forward(c, "alexnet-mini", &AlexNetMini::PLAN, &[1, 64]);
    forward(c, "alexnet", &AlexNet::PLAN, &[1, 8]);
    forward(c, "alexnet-torchvision", &AlexNetTorchvision::PLAN, &[1]);
}

criterion_group!(forward_benches, benches);
criterion_main!(forward_benches);
