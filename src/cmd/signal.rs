//! Waiting for the signals that stop a long-running subcommand (`run`, `emulator`).

/// Resolves at the first Ctrl-C (SIGINT) or SIGTERM. A signal that cannot be listened for is
/// simply never awaited (the other one still works).
pub async fn interrupt_or_terminate() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
