//! Fuzz target `safe_text` (see `otau_operator_fuzz::safe_text_target`): AFL++ feeds each
//! input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::safe_text_target(data);
    });
}
