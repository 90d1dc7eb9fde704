//! Passes over the IR, in the order `compile` runs them. One file, one `pub fn` per pass.

pub mod autodiff;
pub mod place;
pub mod shapes;
