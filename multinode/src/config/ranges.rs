//! The range of each setting that has one: one rule, used by the runtime when
//! it resolves the settings and by `#[multinode::main]`, whose expansion checks
//! every literal against it at compile time (a `const` the macro emits beside
//! the value, so that the error points at the value's token).

/// The most processes one master will supervise.
pub const MAX_NODES: usize = 1024;
/// The longest `shutdown_timeout` or `watchdog_timeout`, in milliseconds: a week.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;
/// The shortest watchdog timeout, in milliseconds: heartbeats come every quarter
/// of it, and no more often than every 10 ms.
pub const MIN_WATCHDOG_MS: u64 = 100;

/// What `nodes` may be, as an error says it.
pub const NODES: &str = "1 to 1024 processes";
/// What `shutdown_timeout` may be, as an error says it.
pub const SHUTDOWN_TIMEOUT: &str = "at most a week";
/// What `watchdog_timeout` may be, as an error says it.
pub const WATCHDOG_TIMEOUT: &str = "0 (off), or 100 ms to a week";

/// What `upgrade_timeout` may be, as an error says it.
pub const UPGRADE_TIMEOUT: &str = "100 ms to a week";

/// The compile errors of the attribute's values out of range (a `const`
/// panics with one string, so each is whole here).
pub const NODES_ERROR: &str = "`nodes` expects 1 to 1024 processes";
/// See [`NODES_ERROR`].
pub const SHUTDOWN_TIMEOUT_ERROR: &str = "`shutdown_timeout` expects at most a week";
/// See [`NODES_ERROR`].
pub const WATCHDOG_TIMEOUT_ERROR: &str = "`watchdog_timeout` expects 0 (off), or 100 ms to a week";
/// See [`NODES_ERROR`].
pub const UPGRADE_TIMEOUT_ERROR: &str = "`upgrade_timeout` expects 100 ms to a week";

/// Whether `nodes` processes may serve.
///
/// ```
/// use multinode::__private::ranges;
/// assert!(ranges::nodes(4) && !ranges::nodes(0) && !ranges::nodes(ranges::MAX_NODES + 1));
/// ```
pub const fn nodes(nodes: usize) -> bool {
    nodes >= 1 && nodes <= MAX_NODES
}

/// Whether a drain may take `millis` milliseconds.
///
/// ```
/// use multinode::__private::ranges;
/// assert!(ranges::shutdown_timeout(30_000) && !ranges::shutdown_timeout(864_000_000));
/// ```
pub const fn shutdown_timeout(millis: u64) -> bool {
    millis <= MAX_DURATION_MS
}

/// Whether the watchdog may wait `millis` milliseconds (0: off).
///
/// ```
/// use multinode::__private::ranges;
/// assert!(ranges::watchdog_timeout(0) && !ranges::watchdog_timeout(5));
/// ```
pub const fn watchdog_timeout(millis: u64) -> bool {
    millis == 0 || (millis >= MIN_WATCHDOG_MS && millis <= MAX_DURATION_MS)
}

/// Whether a new master may take `millis` milliseconds to be ready.
///
/// ```
/// use multinode::__private::ranges;
/// assert!(ranges::upgrade_timeout(30_000) && !ranges::upgrade_timeout(0));
/// ```
pub const fn upgrade_timeout(millis: u64) -> bool {
    millis >= MIN_WATCHDOG_MS && millis <= MAX_DURATION_MS
}

/// What `max_memory` and `max_memory_hard` may be, as an error says it.
pub const SIZE: &str =
    "expected a size in bytes such as 536870912, or 512M, 2G (K, M, G, T: powers of 1024)";
/// See [`NODES_ERROR`].
pub const MAX_MEMORY_ERROR: &str =
    "`max_memory` expects a size in bytes such as 536870912, or 512M, 2G (K, M, G, T: powers of 1024)";
/// See [`NODES_ERROR`].
pub const MAX_MEMORY_HARD_ERROR: &str =
    "`max_memory_hard` expects a size in bytes such as 536870912, or 512M, 2G (K, M, G, T: powers of 1024)";

/// `text` as a number of bytes: digits, then optionally K, M, G or T (powers
/// of 1024, with an optional `B` or `iB` after); `None` if it is not one, or
/// is 0 or too large.
///
/// ```
/// use multinode::__private::ranges;
/// assert_eq!(ranges::bytes("512M"), Some(512 << 20));
/// assert_eq!(ranges::bytes("2GiB"), Some(2 << 30));
/// assert_eq!(ranges::bytes("4096"), Some(4096));
/// assert_eq!(ranges::bytes("12Q"), None);
/// ```
pub const fn bytes(text: &str) -> Option<u64> {
    let text = text.as_bytes();
    let mut i = 0;
    let mut number: u64 = 0;
    while i < text.len() && text[i].is_ascii_digit() {
        number = match number.checked_mul(10) {
            Some(n) => match n.checked_add((text[i] - b'0') as u64) {
                Some(n) => n,
                None => return None,
            },
            None => return None,
        };
        i += 1;
    }
    if i == 0 || number == 0 {
        return None;
    }
    let shift = match text.len() - i {
        0 => 0,
        _ => match text[i].to_ascii_uppercase() {
            b'K' => 10,
            b'M' => 20,
            b'G' => 30,
            b'T' => 40,
            b'B' if text.len() - i == 1 => 0,
            _ => return None,
        },
    };
    let rest = text.len() - i;
    // After the unit: nothing, `B` or `iB`.
    let tail_ok = match rest {
        0 | 1 => true,
        2 => text[i + 1].eq_ignore_ascii_case(&b'B'),
        3 => text[i + 1] == b'i' && text[i + 2].eq_ignore_ascii_case(&b'B'),
        _ => false,
    };
    if !tail_ok || number > (u64::MAX >> shift) {
        return None;
    }
    Some(number << shift)
}

/// Whether `text` is a size for `max_memory` (see [`bytes`]).
///
/// ```
/// assert!(multinode::__private::ranges::size("1G") && !multinode::__private::ranges::size("x"));
/// ```
pub const fn size(text: &str) -> bool {
    bytes(text).is_some()
}

/// [`bytes`] for a value [`size`] accepted (0 otherwise).
///
/// ```
/// assert_eq!(multinode::__private::ranges::bytes_or_zero("1K"), 1024);
/// ```
pub const fn bytes_or_zero(text: &str) -> u64 {
    match bytes(text) {
        Some(n) => n,
        None => 0,
    }
}

/// A compile error saying `error` when `ok` is false: what the attribute's
/// expansion evaluates in a `const`.
///
/// ```
/// const _: () = multinode::__private::ranges::check(true, "never shown");
/// ```
pub const fn check(ok: bool, error: &'static str) {
    if !ok {
        panic!("{}", error)
    }
}

/// A `Duration`'s milliseconds for the rules above, rounded up (so that only
/// zero is 0), saturating.
/// A variable's seconds (`90`, `2.5`) as a duration; `None` if they are not.
pub(crate) fn seconds(text: &str) -> Option<std::time::Duration> {
    let seconds = text.trim().parse::<f64>().ok()?;
    std::time::Duration::try_from_secs_f64(seconds).ok()
}

pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    let rounded_up = duration.saturating_add(std::time::Duration::from_nanos(999_999));
    u64::try_from(rounded_up.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_messages_say_the_bounds() {
        assert!(NODES_ERROR.ends_with(NODES));
        assert!(SHUTDOWN_TIMEOUT_ERROR.ends_with(SHUTDOWN_TIMEOUT));
        assert!(WATCHDOG_TIMEOUT_ERROR.ends_with(WATCHDOG_TIMEOUT));
        assert!(UPGRADE_TIMEOUT_ERROR.ends_with(UPGRADE_TIMEOUT));
        assert!(MAX_MEMORY_ERROR.ends_with(&SIZE["expected ".len()..]));
        assert!(MAX_MEMORY_HARD_ERROR.ends_with(&SIZE["expected ".len()..]));
        assert!(NODES.contains(&MAX_NODES.to_string()));
        assert_eq!(MAX_DURATION_MS, 604_800_000);
        assert!(WATCHDOG_TIMEOUT.contains(&format!("{MIN_WATCHDOG_MS} ms")));
    }

    #[test]
    fn sizes_take_units_of_1024() {
        assert_eq!(bytes("1"), Some(1));
        assert_eq!(bytes("1k"), Some(1024));
        assert_eq!(bytes("3KB"), Some(3072));
        assert_eq!(bytes("1T"), Some(1 << 40));
        for bad in [
            "",
            "0",
            "M",
            "1MM",
            "1 M",
            "1Mx",
            "99999999999999999999",
            "16777216T",
        ] {
            assert_eq!(bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_zero_is_zero_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(100)), 100);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
