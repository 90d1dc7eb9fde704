//! What the training loop and evaluation need of a session, whether it runs on one device
//! ([`Session`]) or on two ([`TowerSession`]): one loop, one checkpoint format.

use crate::error::Result;
use crate::session::{Session, StepConfig, StepOutput};
use crate::towers::TowerSession;
use crate::{Output, Weights};
use alexnet_plan::Plan;

/// A plan opened for training on one or two devices.
pub trait Runner {
    /// The plan, every kernel in its form for (device 0's) adapter.
    fn plan(&self) -> &Plan;
    /// Runs the network on `batch` images.
    fn forward(&mut self, input: &[f32], batch: usize) -> Result<Output>;
    /// One optimiser step on a batch.
    fn train_step(
        &mut self,
        input: &[f32],
        labels: &[u32],
        batch: usize,
        config: &StepConfig,
    ) -> Result<StepOutput>;
    /// Uploads weights (whole tensors).
    fn load_weights(&mut self, weights: &Weights) -> Result<()>;
    /// The weights now on the GPU, whole.
    fn read_weights(&self) -> Result<Weights>;
    /// The optimiser's momentum, one whole tensor per parameter.
    fn read_momentum(&self) -> Result<Vec<Vec<f32>>>;
    /// Sets the momentum (whole tensors).
    fn write_momentum(&mut self, momentum: &[Vec<f32>]) -> Result<()>;
    /// The gradients of the last step, one whole tensor per parameter.
    fn read_param_grads(&self) -> Result<Vec<Vec<f32>>>;
    /// Bytes of GPU memory on each device used.
    fn memory(&self) -> Vec<u64>;
}

macro_rules! runner {
    ($t:ty, $memory:expr) => {
        impl Runner for $t {
            fn plan(&self) -> &Plan {
                <$t>::plan(self)
            }
            fn forward(&mut self, input: &[f32], batch: usize) -> Result<Output> {
                <$t>::forward(self, input, batch)
            }
            fn train_step(
                &mut self,
                input: &[f32],
                labels: &[u32],
                batch: usize,
                config: &StepConfig,
            ) -> Result<StepOutput> {
                <$t>::train_step(self, input, labels, batch, config)
            }
            fn load_weights(&mut self, weights: &Weights) -> Result<()> {
                <$t>::load_weights(self, weights)
            }
            fn read_weights(&self) -> Result<Weights> {
                <$t>::read_weights(self)
            }
            fn read_momentum(&self) -> Result<Vec<Vec<f32>>> {
                <$t>::read_momentum(self)
            }
            fn write_momentum(&mut self, momentum: &[Vec<f32>]) -> Result<()> {
                <$t>::write_momentum(self, momentum)
            }
            fn read_param_grads(&self) -> Result<Vec<Vec<f32>>> {
                <$t>::read_param_grads(self)
            }
            fn memory(&self) -> Vec<u64> {
                let memory: fn(&$t) -> Vec<u64> = $memory;
                memory(self)
            }
        }
    };
}

runner!(Session<'_>, |s| vec![s.memory()]);
runner!(TowerSession<'_>, |s| s.memory().to_vec());
