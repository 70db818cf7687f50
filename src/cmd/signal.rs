//! Waiting for the signals that stop a long-running subcommand (`run`, `emulator`).
//!
//! The handlers are installed when [`StopSignals::listen`] is called, not when the wait is
//! first polled: a command listens before it says it is ready, so a SIGTERM sent the moment
//! it is ready stops it cleanly instead of killing it with the default action.

/// The stop signals (SIGINT, SIGTERM), listened for from the moment this exists.
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Installs the handlers now (inside a Tokio runtime). A signal that cannot be listened
    /// for is simply never awaited (the other one still works).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves at the next Ctrl-C (SIGINT) or SIGTERM received since [`Self::listen`].
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        {
            let interrupt = received(self.interrupt.as_mut());
            let terminate = received(self.terminate.as_mut());
            tokio::select! {
                () = interrupt => {},
                () = terminate => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The next delivery of `signal`; never when it is not listened for.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
