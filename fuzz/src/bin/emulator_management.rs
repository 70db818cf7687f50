//! Fuzz target `emulator_management` (see `otau_operator_fuzz::emulator_management`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::emulator_management(data);
    });
}
