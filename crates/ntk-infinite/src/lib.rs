//! # ntk-infinite
//!
//! Infinite-width NNGP/NTK recursions and sketched NTK random features (Zandieh et al.,
//! NeurIPS 2021). **Not implemented yet**: this crate only reserves its place in the
//! workspace (see the issue tracker); nothing here is usable.
