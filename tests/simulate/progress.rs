//! Progress bars are drawn when stdout is a terminal and never when it is a pipe. The terminal
//! is a pseudo-terminal from util-linux `script` (package bsdutils, part of every Debian
//! system), so no terminal crate and no tmux are needed.

use crate::harness::{repo, run_with_deadline, simulate};

/// Text the bars draw and the report never prints: the virtual clock in the bar's message.
const BAR_MARK: &str = "| T+";

fn args() -> Vec<String> {
    vec![
        "simulate".into(),
        "-f".into(),
        repo("examples/simulate-rollout-failures.yaml"),
        "--profile".into(),
        repo("examples/fleet-profile-failures.yaml"),
    ]
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn bars_show_on_a_terminal_and_not_on_a_pipe() {
    let command = std::iter::once(crate::harness::bin().to_string())
        .chain(args())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    // -q: no start/done lines; -e: the child's exit code; -f: flush as it goes.
    let run = run_with_deadline(
        "script",
        &[
            "-qef".into(),
            "-c".into(),
            format!("TERM=xterm-256color {command}"),
            "/dev/null".into(),
        ],
    );
    assert_eq!(
        run.code, 2,
        "the example pauses: {}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains(BAR_MARK) && run.stdout.contains("wave 1/3 pilot"),
        "no progress bar on the terminal:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("Result: PAUSED"), "{}", run.stdout);

    let piped = simulate(&args()[1..].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(piped.code, 2);
    assert!(piped.stdout.contains("Result: PAUSED"), "{}", piped.stdout);
    assert!(
        !piped.stdout.contains(BAR_MARK) && !piped.stderr.contains(BAR_MARK),
        "bars drawn into a pipe:\n{}",
        piped.stdout
    );
}
