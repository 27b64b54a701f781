//! Studies that combine the engines on the bundled data, run by the examples (full size)
//! and by the tests (small size): what a user does with kernels, end to end.

pub mod nas_scores;
pub mod trained_vs_init;
