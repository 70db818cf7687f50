//! Fuzz target `simulate_yaml` (see `otau_operator_fuzz::simulate_yaml`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::simulate_yaml(data);
    });
}
