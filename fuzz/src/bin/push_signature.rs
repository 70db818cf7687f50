//! Fuzz target `push_signature` (see `otau_operator_fuzz::push_signature`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::push_signature(data);
    });
}
