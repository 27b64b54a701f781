//! The `.npy` reader (header checks before any allocation, decoding).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ntk_nets::array::parse_npy(data);
});
