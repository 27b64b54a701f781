//! No build step: this script exists so that `[build-dependencies]` can pin the features
//! of syn that the Python bindings' proc macros turn on (see Cargo.toml), keeping one set
//! of burn artifacts for `cargo run`, `cargo test --workspace` and the wheel build.
fn main() {}
