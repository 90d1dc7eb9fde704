//! The training loop: epochs of SGD steps on a [`Runner`] (one device or two), checkpoints, the schedule and
//! evaluation, as a library type that front ends drive.
//!
//! A [`Trainer`] owns the run's [`TrainState`] and runs one epoch at a time, reporting every
//! step to a callback (the CLI draws a progress bar from it) and returning an
//! [`EpochReport`]. It saves a checkpoint every `save_every` steps and at the end of each
//! epoch, atomically, so a run stopped anywhere resumes exactly. It does no printing and
//! writes nothing but checkpoints; metrics files and plots are the front end's.

use crate::error::{Error, Result};
use crate::runner::Runner;
use crate::train::{self, Checkpoint, Source, TrainOptions, TrainState};
use alexnet_plan::Plan;
use std::path::PathBuf;
use std::time::Instant;

/// What one step did, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Optimiser steps done in all, this one included.
    pub step: u32,
    /// Batches of this epoch done, this one included.
    pub batch_in_epoch: u32,
    /// This step's mean loss over its batch.
    pub batch_loss: f64,
    /// Mean loss and top-1 accuracy over the epoch's images so far.
    pub loss: f64,
    pub accuracy: f64,
    /// Images per second over the epoch so far.
    pub images_per_s: f64,
}

/// The end of an epoch: training and evaluation figures.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: u32,
    pub step: u32,
    /// Learning rate the epoch ran with, and whether the schedule divided it afterwards.
    pub lr: f32,
    pub lr_divided: bool,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// Validation top-1; `None` when no images were held out for validation.
    pub val_top1: Option<f64>,
    /// Test accuracy, when a test set was given.
    pub test: Option<(f64, f64)>,
    pub images_per_s: f64,
    pub seconds: f64,
}

/// How an epoch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Epoch {
    Done(EpochReport),
    /// The step limit was reached mid-epoch; a checkpoint was saved.
    Stopped,
}

/// A training run on one session (of one or two devices).
pub struct Trainer<'s, 'g> {
    session: &'s mut (dyn Runner + 'g),
    plan: &'s Plan,
    options: TrainOptions,
    state: TrainState,
    checkpoint: PathBuf,
    max_steps: Option<u32>,
}

impl<'s, 'g> Trainer<'s, 'g> {
    /// A run of `options` on `session` (weights, and momentum when resuming, already loaded),
    /// from `state`, checkpointing to `checkpoint`; it stops after `max_steps` steps in all.
    pub fn new(
        session: &'s mut (dyn Runner + 'g),
        plan: &'s Plan,
        options: TrainOptions,
        state: TrainState,
        checkpoint: PathBuf,
        max_steps: Option<u32>,
    ) -> Self {
        Trainer {
            session,
            plan,
            options,
            state,
            checkpoint,
            max_steps,
        }
    }

    /// Where the run is.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The session being trained.
    pub fn session(&mut self) -> &mut (dyn Runner + 'g) {
        self.session
    }

    /// Whether every epoch has run.
    pub fn finished(&self) -> bool {
        self.state.epoch >= self.options.epochs
    }

    /// Saves the weights, momentum and state, atomically.
    pub fn save(&self) -> Result<()> {
        let c = Checkpoint {
            weights: self.session.read_weights()?,
            momentum: self.session.read_momentum()?,
            state: self.state.clone(),
        };
        c.save(self.plan, &self.checkpoint)
    }

    /// Runs the rest of the current epoch on `train_set` (batches prepared on worker threads),
    /// then evaluates on `val_set` and `test_set` and applies the schedule.
    pub fn run_epoch<E>(
        &mut self,
        train_set: &dyn Source,
        val_set: &dyn Source,
        test_set: Option<&dyn Source>,
        mut on_step: impl FnMut(&StepReport),
        on_epoch: impl FnOnce(&EpochReport) -> std::result::Result<(), E>,
    ) -> std::result::Result<Epoch, E>
    where
        E: From<Error>,
    {
        let epoch = self.state.epoch;
        let batch_size = self.options.batch;
        let classes = self.plan.classes() as usize;
        // Images of this epoch done before this call (by a run that was then stopped or killed).
        let before = self.state.batch_in_epoch as usize * batch_size;
        let mut seen = 0usize;
        let start = Instant::now();
        let mut stopped = false;
        std::thread::scope(|scope| -> Result<()> {
            let batches = train::epoch_batches(
                scope,
                train_set,
                &self.options,
                epoch,
                self.state.batch_in_epoch,
            );
            for batch in batches.iter() {
                let batch = batch?;
                if self.max_steps.is_some_and(|m| self.state.step >= m) {
                    stopped = true;
                    break;
                }
                let out = self.session.train_step(
                    &batch.input,
                    &batch.labels,
                    batch_size,
                    &self.state.step_config(&self.options),
                )?;
                train::check_finite(self.session, self.plan, out.loss, self.state.step)?;
                self.state.step += 1;
                self.state.batch_in_epoch += 1;
                seen += batch_size;
                self.state.epoch_loss_sum += out.loss * batch_size as f64;
                let right = batch
                    .labels
                    .iter()
                    .enumerate()
                    .filter(|(i, &l)| {
                        argmax(&out.logits[i * classes..(i + 1) * classes]) == l as usize
                    })
                    .count();
                self.state.epoch_correct += right as u64;
                let done = (before + seen) as f64;
                on_step(&StepReport {
                    step: self.state.step,
                    batch_in_epoch: self.state.batch_in_epoch,
                    batch_loss: out.loss,
                    loss: self.state.epoch_loss_sum / done,
                    accuracy: self.state.epoch_correct as f64 / done,
                    images_per_s: seen as f64 / start.elapsed().as_secs_f64(),
                });
                if self.state.step % self.options.save_every == 0 {
                    self.save()?;
                }
            }
            Ok(())
        })?;
        if stopped {
            self.save()?;
            return Ok(Epoch::Stopped);
        }
        let seconds = start.elapsed().as_secs_f64();
        let val_top1 = match val_set.len() {
            0 => None,
            _ => Some(train::evaluate(self.session, val_set, batch_size, false, |_| {})?.0),
        };
        let test = match test_set {
            Some(t) => Some(train::evaluate(self.session, t, batch_size, false, |_| {})?),
            None => None,
        };
        let lr = self.state.lr;
        let done = (before + seen).max(1) as f64;
        let (train_loss, train_accuracy) = (
            self.state.epoch_loss_sum / done,
            self.state.epoch_correct as f64 / done,
        );
        let lr_divided = self
            .state
            .end_epoch(&self.options.schedule, val_top1.map(|v| 1.0 - v));
        let report = EpochReport {
            epoch: epoch + 1,
            step: self.state.step,
            lr,
            lr_divided,
            train_loss,
            train_accuracy,
            val_top1,
            test,
            images_per_s: seen as f64 / seconds,
            seconds,
        };
        // The report is recorded before the checkpoint that ends the epoch: a kill between the
        // two repeats the epoch's end on resume (the caller replaces its record), where the
        // other order could lose the record for good.
        on_epoch(&report)?;
        self.save()?;
        Ok(Epoch::Done(report))
    }
}

/// Index of the largest value, ties to the lower index.
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (c, v)| if *v > row[b] { c } else { b })
}
