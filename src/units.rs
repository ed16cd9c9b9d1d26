//! Human-readable sizes and durations for tables and progress lines.

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A size for errors and notes: human, with the exact bytes in parentheses.
pub fn bytes_exact(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{} ({n} bytes)", bytes(n))
    }
}

pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        "under 1 s".to_string()
    } else if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::bytes(440), "440 B");
        assert_eq!(super::bytes(1 << 20), "1.0 MiB");
        assert_eq!(super::bytes(3 << 29), "1.5 GiB");
    }
}
