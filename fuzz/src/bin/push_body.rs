//! Fuzz target `push_body` (see `otau_operator_fuzz::push_body`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::push_body(data);
    });
}
