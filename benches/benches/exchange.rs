//! What moving the paper's two-tower exchanges between two devices costs: every forward
//! exchange `Plan::exchanges` lists for device 1, at batch 8 and 128, moved from device 0 by
//! `exchange::Link` (one transfer per exchange point, as `TowerSession` does; an LRN's
//! boundary channels as one region per image). On a CPU-only machine both devices are the
//! lavapipe adapter opened twice; set ALEXNET_BACKEND / ALEXNET_ADAPTER to choose.

use alexnet::models::AlexNet;
use alexnet::plan::ExchangeKind;
use alexnet::runtime::exchange::{Link, Region};
use alexnet::{Gpu, GpuOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn exchanges(c: &mut Criterion) {
    let plan = &AlexNet::PLAN;
    let open = || {
        Gpu::open(&GpuOptions::default(), plan)
            .unwrap_or_else(|e| panic!("benchmarks need a GPU adapter: {e}"))
    };
    let (a, b) = (open(), open());
    let mut group = c.benchmark_group(format!("alexnet-exchange/{}", a.describe()));
    group.sample_size(10);
    for batch in [8u64, 128] {
        // Each exchange point's regions, and the largest buffer any of them needs.
        let points: Vec<Vec<Region>> = plan
            .exchanges
            .iter()
            .filter(|e| e.to == 1)
            .map(|e| match e.kind {
                ExchangeKind::Halo { .. } => (0..batch)
                    .map(|i| Region {
                        src_offset: i * 4 * e.bytes_per_image,
                        dst_offset: i * 4 * e.bytes_per_image,
                        bytes: e.bytes_per_image,
                    })
                    .collect(),
                ExchangeKind::Gather | ExchangeKind::Whole => vec![Region {
                    src_offset: 0,
                    dst_offset: 0,
                    bytes: e.bytes_per_image * batch,
                }],
            })
            .collect();
        let size = points
            .iter()
            .flatten()
            .map(|r| r.src_offset + r.bytes)
            .max()
            .unwrap_or(4);
        let buffer = |gpu: &Gpu| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("exchange bench"),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (buffer(&a), buffer(&b));
        let link = Link::new(
            &a,
            points
                .iter()
                .map(|p| p.iter().map(|r| r.bytes).sum::<u64>())
                .max()
                .unwrap_or(4),
        )
        .unwrap();
        let total: u64 = points.iter().flatten().map(|r| r.bytes).sum();
        group.throughput(Throughput::Bytes(total));
        group.bench_function(format!("forward_to_device1_batch{batch}"), |bench| {
            bench.iter(|| {
                for regions in &points {
                    link.transfer(&a, &src, &b, &dst, regions).unwrap();
                }
                // The writes land with the receiver's next submission: wait for it.
                b.wait(b.queue.submit([])).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(exchange_benches, exchanges);
criterion_main!(exchange_benches);
