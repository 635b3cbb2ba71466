//! What Prometheus clients call the process metrics (`process_*`), read for
//! any node's process from `/proc`: CPU seconds, descriptors, start time,
//! resident memory.

/// One process's figures.
#[derive(Debug, PartialEq)]
pub(crate) struct Stats {
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
    pub resident_bytes: u64,
}

/// The clock ticks of `/proc`'s times (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Process `pid`'s figures; `None` if it is gone (or 0: none).
pub(crate) fn read(pid: u32) -> Option<Stats> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let (cpu_ticks, start_ticks, rss_pages) = parse_stat(&stat)?;
    let boot_seconds = parse_boot_time(&boot)?;
    let ticks = ticks_per_second();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    Some(Stats {
        cpu_seconds: cpu_ticks as f64 / ticks,
        open_fds,
        max_fds: parse_max_fds(&limits),
        start_time_seconds: boot_seconds as f64 + start_ticks as f64 / ticks,
        resident_bytes: rss_pages * page_size(),
    })
}

/// Process `pid`'s resident bytes, from `/proc/PID/statm` (its second field,
/// in pages): the one figure recycling reads every second.
pub(crate) fn resident(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// User and system ticks, the start in ticks after boot, and resident pages,
/// from `/proc/PID/stat` (fields 14, 15, 22 and 24; the name, field 2, may
/// hold spaces and parentheses: the fields count from its last `)`).
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?, field(24)?))
}

/// The boot time (seconds since the epoch) from `/proc/stat`'s `btime` line.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of open files from `/proc/PID/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_files_parse_and_this_process_reads() {
        let stat = "4242 (a (strange) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 1 0 12345 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 12345, 300)));
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let me = read(std::process::id()).unwrap();
        assert!(me.open_fds >= 3 && me.resident_bytes > 0, "{me:?}");
        let resident = resident(std::process::id()).unwrap();
        assert!(resident > 0 && resident.abs_diff(me.resident_bytes) < 64 << 20);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(me.start_time_seconds <= now + 1.0 && me.start_time_seconds > now - 3600.0);
        assert_eq!(read(0), None);
    }
}
