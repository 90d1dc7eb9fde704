//! Moving tensors between two devices: the transport of a two-device plan's exchanges.
//!
//! wgpu has no peer-to-peer copy between devices (two GPUs, or one adapter opened twice as two
//! logical devices), so a transfer goes through the host: every region is copied into one
//! staging buffer on the sender in a single submission, the staging buffer is mapped (a
//! bounded wait), and each region is written into the receiver's buffer with
//! `Queue::write_buffer`, which wgpu orders before the receiver's next submission. Regions let
//! one transfer gather strided pieces (an LRN's boundary channels of every image) at the cost
//! of one wait.

use crate::error::{Error, Result};
use crate::gpu::{range_fault, Gpu};

/// One contiguous byte range to move: `bytes` at `src_offset` of the sender's buffer to
/// `dst_offset` of the receiver's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub src_offset: u64,
    pub dst_offset: u64,
    pub bytes: u64,
}

/// A staging buffer on the sending device, reused by every transfer that fits it.
pub struct Link {
    staging: wgpu::Buffer,
    capacity: u64,
}

impl Link {
    /// A link that moves up to `capacity` bytes per transfer out of `from`.
    pub fn new(from: &Gpu, capacity: u64) -> Result<Link> {
        let capacity = capacity
            .max(4)
            .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = from.checked("allocating the exchange staging buffer", || {
            from.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("exchange staging"),
                size: capacity,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(Link { staging, capacity })
    }

    /// Bytes one transfer can move.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Moves `regions` of `src` (a COPY_SRC buffer of `from`, the device this link was made
    /// on) into `dst` (a COPY_DST buffer of `to`). Returns the bytes moved. Regions must be
    /// 4-byte aligned and lie inside both buffers; an error names the first that does not.
    pub fn transfer(
        &self,
        from: &Gpu,
        src: &wgpu::Buffer,
        to: &Gpu,
        dst: &wgpu::Buffer,
        regions: &[Region],
    ) -> Result<u64> {
        let align = wgpu::COPY_BUFFER_ALIGNMENT;
        let mut total = 0u64;
        for (i, r) in regions.iter().enumerate() {
            let faults = [
                ("sender", r.src_offset, src.size()),
                ("receiver", r.dst_offset, dst.size()),
            ];
            if let Some((side, fault)) = faults.iter().find_map(|&(side, offset, size)| {
                Some((side, range_fault(offset, r.bytes, size, align)?))
            }) {
                return Err(Error::Transfer(format!(
                    "region {i} ({r:?}) {fault} on the {side}'s side"
                )));
            }
            total += r.bytes;
        }
        if total > self.capacity {
            return Err(Error::Transfer(format!(
                "{total} bytes exceed the link's {}-byte staging buffer",
                self.capacity
            )));
        }
        if total == 0 {
            return Ok(0);
        }
        let mut encoder = from
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("exchange"),
            });
        let mut at = 0;
        for r in regions {
            encoder.copy_buffer_to_buffer(src, r.src_offset, &self.staging, at, r.bytes);
            at += r.bytes;
        }
        let submission = from.checked("copying into the exchange staging buffer", || {
            from.queue.submit([encoder.finish()])
        })?;
        from.wait(submission)?;
        let staged = from.map_read(&self.staging, 0, total)?;
        to.checked("writing exchanged data", || {
            let mut at = 0;
            for r in regions {
                to.queue
                    .write_buffer(dst, r.dst_offset, &staged[at..at + r.bytes as usize]);
                at += r.bytes as usize;
            }
        })?;
        Ok(total)
    }
}
