//! Process shutdown in two phases: `Draining` (stop accepting, let sessions finish) and
//! `Closing` (the grace period is over: sessions say BYE and close).

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Closing,
}

/// The sending side, held by `main`.
#[derive(Debug)]
pub struct Trigger(watch::Sender<Phase>);

/// A cheap handle every listener and session holds.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<Phase>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(Phase::Running);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn set(&self, phase: Phase) {
        self.0.send_if_modified(|current| {
            let advance = phase > *current;
            if advance {
                *current = phase;
            }
            advance
        });
    }

    /// Resolves when every [`Shutdown`] handle has been dropped: all sessions ended.
    pub async fn finished(&self) {
        self.0.closed().await;
    }
}

impl Shutdown {
    pub fn phase(&self) -> Phase {
        *self.0.borrow()
    }

    /// Resolves once the phase is at least `phase` (or the trigger is gone).
    pub async fn reached(&mut self, phase: Phase) {
        let _ = self.0.wait_for(|p| *p >= phase).await;
    }
}
