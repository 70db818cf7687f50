//! Fuzz target `emulator_device` (see `otau_operator_fuzz::emulator_device`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::emulator_device(data);
    });
}
