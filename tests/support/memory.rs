//! Memory of this test process (the proxy runs in-process): RSS and its peak, for the
//! cases that must show a bound; the gate that keeps other tests of the binary from
//! allocating meanwhile; and a bulk sender that samples RSS as it goes.

#![allow(dead_code)]

use std::sync::{Arc, LazyLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::raw::{Delivery, RawClient};

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// RSS growth of this process since [`MemoryProbe::start`]: the peak (VmHWM after
/// resetting it through /proc/self/clear_refs, Linux ≥ 4.0) where possible, else the
/// largest sample. A peak, because a buffer freed before the end would not show in RSS.
pub struct MemoryProbe {
    baseline_kib: u64,
    /// Whether the peak could be reset, so that `VmHWM` counts.
    pub peak_reset: bool,
    sampled_kib: u64,
}

impl MemoryProbe {
    pub fn start() -> Self {
        let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let baseline_kib = proc_status_kib("VmRSS");
        Self {
            baseline_kib,
            peak_reset,
            sampled_kib: baseline_kib,
        }
    }

    pub fn sample(&mut self) {
        self.sampled_kib = self.sampled_kib.max(proc_status_kib("VmRSS"));
    }

    pub fn growth_kib(&mut self) -> u64 {
        self.sample();
        let peak = if self.peak_reset {
            proc_status_kib("VmHWM").max(self.sampled_kib)
        } else {
            self.sampled_kib
        };
        peak.saturating_sub(self.baseline_kib)
    }
}

// === one measurement at a time ===

/// Held by every test of a binary that measures memory: shared by the others, exclusive
/// by the one measuring, so that no other test of the process allocates meanwhile.
static MEMORY: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// A hold on [`MEMORY`], released when dropped (held for its Drop only).
pub enum MemoryGate {
    Shared(OwnedRwLockReadGuard<()>),
    Exclusive(OwnedRwLockWriteGuard<()>),
}

/// For a test that does not measure memory: runs alongside the others.
pub async fn shared_gate() -> MemoryGate {
    MemoryGate::Shared(MEMORY.clone().read_owned().await)
}

/// For a test that measures memory: waits until no other test holds the gate.
pub async fn exclusive_gate() -> MemoryGate {
    MemoryGate::Exclusive(MEMORY.clone().write_owned().await)
}

// === sending a lot ===

/// Writes of [`send_bulk`]: 64 KiB, or one `pattern` if that is longer.
const BULK_WRITE: usize = 64 * 1024;

/// Sends `total` bytes of `pattern` repeated, in writes of 64 KiB (or of one `pattern`,
/// if longer), sampling RSS every MiB when given a `probe`, until done or until the peer
/// closes the connection. Returns how many bytes were written.
pub async fn send_bulk<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    pattern: &[u8],
    total: usize,
    mut probe: Option<&mut MemoryProbe>,
) -> usize {
    let chunk = pattern.repeat((BULK_WRITE / pattern.len()).max(1));
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        if !c.send_attack(&chunk[..n], Delivery::Whole).await {
            break;
        }
        sent += n;
        if let Some(probe) = probe.as_deref_mut() {
            if sent % (1024 * 1024) < n {
                probe.sample();
            }
        }
    }
    sent
}
