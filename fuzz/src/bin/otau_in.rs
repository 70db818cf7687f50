//! Fuzz target `otau_in` (see `otau_operator_fuzz::otau_in`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::otau_in(data);
    });
}
