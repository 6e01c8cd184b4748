//! What `/proc` says about a process: CPU time and resident memory.

use anyhow::{Context, Result};
use std::sync::OnceLock;

/// Clock ticks per second of the CPU times in `/proc/PID/stat` (`getconf CLK_TCK`; 100
/// on every common Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User and system CPU time, in clock ticks, from the text of `/proc/PID/stat`. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after
/// its last `)`: utime and stime are fields 14 and 15.
pub fn parse_stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// CPU time a process has used (all threads, those that ended included), in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    /// In user space.
    pub user: f64,
    /// In the kernel.
    pub system: f64,
}

impl Cpu {
    /// User plus system.
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    /// The time used since `before`.
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// CPU time the process has used.
pub fn cpu(pid: u32) -> Result<Cpu> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let (u, k) = parse_stat_ticks(&s).with_context(|| format!("{path}: unexpected format"))?;
    Ok(Cpu {
        user: u as f64 / clock_ticks(),
        system: k as f64 / clock_ticks(),
    })
}

/// CPU time of this process.
pub fn own_cpu() -> Result<Cpu> {
    cpu(std::process::id())
}

/// Resident memory now (`VmRSS`) and at its peak so far (`VmHWM`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// VmRSS in KiB.
    pub now_kib: u64,
    /// VmHWM in KiB.
    pub peak_kib: u64,
}

/// `VmRSS` and `VmHWM` from the text of `/proc/PID/status`.
pub fn parse_status_rss(status: &str) -> Option<Rss> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Rss {
        now_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Resident memory of a process.
pub fn rss(pid: u32) -> Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    parse_status_rss(&s).with_context(|| format!("{path}: no VmRSS/VmHWM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let s = "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 9 0 100 ...";
        assert_eq!(parse_stat_ticks(s), Some((250, 30)));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_rss() {
        let s = "Name:\tmosquitto\nVmHWM:\t   15872 kB\nVmRSS:\t   15500 kB\nThreads:\t1\n";
        assert_eq!(
            parse_status_rss(s),
            Some(Rss {
                now_kib: 15500,
                peak_kib: 15872
            })
        );
    }

    #[test]
    fn own_process() {
        assert!(own_cpu().unwrap().total() >= 0.0);
        assert!(rss(std::process::id()).unwrap().now_kib > 0);
    }
}
