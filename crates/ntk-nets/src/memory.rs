//! A guard against specs whose parameters cannot fit in memory: an error naming the
//! size, instead of an allocation failure that aborts the process.

use crate::error::{NetsError, Result};

/// Bytes of memory this process can expect to get: the system's `MemAvailable`
/// (`/proc/meminfo`), or less under a cgroup (v2 `memory.max` minus `memory.current`, as in
/// containers and job schedulers); `None` where neither is known.
pub fn available_memory() -> Option<u64> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // "max" (no limit) does not parse: no cgroup bound.
    let cgroup =
        read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    match (system, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Fails with [`NetsError::TooLarge`] when `needed` bytes exceed the available memory
/// (no check where it is unknown).
pub fn check_fits(what: &str, needed: u128) -> Result<()> {
    if let Some(available) = available_memory()
        && needed > available as u128
    {
        return Err(NetsError::TooLarge {
            what: what.to_string(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused_and_small_ones_pass() {
        if available_memory().is_none() {
            return; // not Linux: nothing to check against
        }
        assert!(check_fits("x", 1 << 20).is_ok());
        let e = check_fits("the parameters", 1 << 80)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the parameters"), "{e}");
    }
}
