//! Memory of this test process (the proxy runs in-process): RSS and its peak, for the
//! cases that must show a bound.

#![allow(dead_code)]

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
