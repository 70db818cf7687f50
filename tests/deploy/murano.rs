//! The Murano event forwarder (`deploy/murano/otau_forward.lua`) under plain Lua 5.1, Murano's
//! dialect: its own checks (`deploy/murano/test_otau_forward.lua`: the RFC 4231 vectors, the
//! contract's vector of exosite-platform.md §6.3, the request it posts, and what it forwards:
//! only `otau_in` and `config_otau`, an event without a timestamp stamped with the clock).

use std::process::Command;

use crate::support::{repo_root, tool};

#[test]
fn the_forwarder_script_passes_its_checks_under_lua_5_1() {
    let out = Command::new(tool("lua5.1"))
        .arg("deploy/murano/test_otau_forward.lua")
        .current_dir(repo_root())
        .output()
        .expect("run lua5.1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("all passed"),
        "deploy/murano/test_otau_forward.lua failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
