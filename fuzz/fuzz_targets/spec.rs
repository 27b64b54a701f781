//! The spec parser and the shape analysis of an accepted spec.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(spec) = ntk_nets::NetworkSpec::from_json(text)
    {
        let _ = spec.analyse();
        let _ = spec.n_params();
        let _ = spec.input_feature_shape();
        let _ = spec.to_json();
    }
});
