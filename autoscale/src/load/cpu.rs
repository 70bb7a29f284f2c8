//! CPU time of a process from `/proc/PID/stat`, to turn into cores used over a step.

use std::time::Instant;

/// Clock ticks per second of the `utime`/`stime` fields: the kernel's USER_HZ, which Linux
/// fixes at 100 for user space on every architecture wick runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading of a process's CPU time (user + system) and when it was taken.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    seconds: f64,
    at: Instant,
}

/// Reads the process's CPU time; `None` if it is gone or the file is not as expected.
pub fn sample(pid: u32) -> Option<CpuSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(CpuSample {
        seconds: cpu_seconds(&stat)?,
        at: Instant::now(),
    })
}

/// Cores used between two readings (1.0 = one core busy all the time).
pub fn cores_between(from: CpuSample, to: CpuSample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return f64::NAN;
    }
    (to.seconds - from.seconds) / wall
}

/// `utime + stime` of a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may itself hold spaces or parentheses, so fields are counted after the last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_past_a_tricky_name() {
        let line =
            "4242 (wick (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 0";
        assert_eq!(cpu_seconds(line), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.seconds >= 0.0);
    }
}
