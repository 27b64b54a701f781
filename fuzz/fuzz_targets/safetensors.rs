//! The safetensors reader and the check of its tensors against a small spec.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn geometry() -> &'static Vec<ntk_nets::spec::LayerGeometry> {
    static G: OnceLock<Vec<ntk_nets::spec::LayerGeometry>> = OnceLock::new();
    G.get_or_init(|| {
        ntk_nets::NetworkSpec::from_json(
            r#"{"input_shape":[4],"layers":[{"type":"dense","width":3,"w_std":1.4,"b_std":0.1},{"type":"relu"},{"type":"dense","width":2}]}"#,
        )
        .unwrap()
        .analyse()
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = ntk_nets::weights::parse_safetensors(data) {
        let _ = ntk_nets::weights::check_against(std::path::Path::new("fuzz"), &params, geometry());
    }
});
