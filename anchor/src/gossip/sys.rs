//! This process's CPU time and resident memory (from `/proc/self` on Linux; zero
//! elsewhere) and the free space of the data directory's file system. The parsers are pure
//! and tested; the reads are one file each.

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) used by the process, from the text of `/proc/self/stat`.
pub fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // after the last ')'. There field 3 (state) is index 0, utime (14) index 11, stime 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Resident memory in bytes, from the text of `/proc/self/status` (`VmRSS: 1234 kB`).
pub fn rss_bytes_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Turns successive CPU-seconds readings into thousandths of a core.
#[derive(Clone, Debug, Default)]
pub struct CpuMeter {
    last: Option<(u64, f64)>,
}

impl CpuMeter {
    /// Takes the process's CPU seconds at `now_ms`; returns the use since the previous
    /// sample (0 for the first).
    pub fn sample(&mut self, now_ms: u64, cpu_s: f64) -> u32 {
        let out = match self.last {
            Some((t, c)) if now_ms > t && cpu_s >= c => {
                let wall_s = (now_ms - t) as f64 / 1000.0;
                ((cpu_s - c) / wall_s * 1000.0)
                    .round()
                    .min(f64::from(u32::MAX)) as u32
            }
            _ => 0,
        };
        self.last = Some((now_ms, cpu_s));
        out
    }
}

/// The process's CPU seconds, if the platform tells.
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_from_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The process's resident memory, if the platform tells.
pub fn rss_bytes() -> Option<u64> {
    rss_bytes_from_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `(free, total)` bytes of the file system holding `dir` (zeros when unknown).
pub fn disk_space(dir: &Path) -> (u64, u64) {
    let free = fs2::available_space(dir).unwrap_or(0);
    let total = fs2::total_space(dir).unwrap_or(0);
    (free.min(total), total)
}

/// Cores available to the process.
pub fn cores() -> u16 {
    std::thread::available_parallelism()
        .map(|n| u16::try_from(n.get()).unwrap_or(u16::MAX))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_parse() {
        let stat =
            "4242 (anchor age (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.0));
        assert_eq!(cpu_seconds_from_stat("garbage"), None);
        let status = "Name:\tanchorage\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(rss_bytes_from_status(status), Some(2 * 1024 * 1024));
        assert_eq!(rss_bytes_from_status("Name: x\n"), None);
    }

    #[test]
    fn cpu_meter_reports_millicores() {
        let mut m = CpuMeter::default();
        assert_eq!(m.sample(1_000, 10.0), 0);
        assert_eq!(m.sample(3_000, 11.0), 500, "1 s of CPU in 2 s");
        assert_eq!(m.sample(3_000, 12.0), 0, "no wall time passed");
        assert_eq!(m.sample(4_000, 14.0), 2_000);
    }

    #[test]
    fn this_process_is_measured() {
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds().is_some());
            assert!(rss_bytes().unwrap() > 0);
        }
        let (free, total) = disk_space(Path::new("."));
        assert!(free <= total);
    }
}
