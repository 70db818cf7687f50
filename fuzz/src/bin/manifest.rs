//! Fuzz target `manifest` (see `otau_operator_fuzz::manifest`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::manifest(data);
    });
}
