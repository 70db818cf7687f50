//! Fuzz target `emulator_mqtt` (see `otau_operator_fuzz::emulator_mqtt`): AFL++ feeds each input to it.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        otau_operator_fuzz::emulator_mqtt(data);
    });
}
