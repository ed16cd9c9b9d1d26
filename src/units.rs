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

/// An estimate for people: "about 3 min", or "under 1 s" (not "about under 1 s").
pub fn about(secs: f64) -> String {
    if secs < 1.0 {
        duration(secs)
    } else {
        format!("about {}", duration(secs))
    }
}

/// Columns of the console human output is laid out for: COLUMNS when set, else the
/// terminal's width when stdout is one, else 80 (a VGA or serial console, a log).
pub fn width() -> usize {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c >= 40)
    {
        return c.min(400);
    }
    let stdout = std::io::stdout();
    if let Ok(ws) = rustix::termios::tcgetwinsize(&stdout)
        && ws.ws_col >= 40
    {
        return usize::from(ws.ws_col).min(400);
    }
    80
}

/// `text` cut to `width` characters (the last one an ellipsis when cut).
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// `text` broken at spaces into lines of at most `width` characters; lines after the first
/// start with `indent`. A word longer than a line is cut where it must be.
pub fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0usize;
    let lead = text.len() - text.trim_start().len();
    let first_indent = &text[..lead];
    line.push_str(first_indent);
    len += first_indent.chars().count();
    let mut fresh = true;
    for word in text[lead..].split(' ').filter(|w| !w.is_empty()) {
        let mut word: String = word.to_string();
        loop {
            let wlen = word.chars().count();
            let need = if fresh { wlen } else { wlen + 1 };
            if len + need <= width {
                if !fresh {
                    line.push(' ');
                }
                line.push_str(&word);
                len += need;
                fresh = false;
                break;
            }
            if !fresh {
                lines.push(std::mem::take(&mut line));
                line.push_str(indent);
                len = indent.chars().count();
                fresh = true;
                continue;
            }
            // A word longer than the whole line.
            let room = width.saturating_sub(len).max(1);
            let head: String = word.chars().take(room).collect();
            word = word.chars().skip(room).collect();
            line.push_str(&head);
            lines.push(std::mem::take(&mut line));
            line.push_str(indent);
            len = indent.chars().count();
            if word.is_empty() {
                break;
            }
        }
    }
    if !fresh || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A table of `rows` under `header`, indented by `indent` spaces and at most `width` wide:
/// when the columns do not fit, the widest wrappable column (`wrap[i]`) gives way and its
/// cells wrap onto continuation lines. `right[i]` right-aligns a column.
pub fn table(
    header: &[&str],
    rows: &[Vec<String>],
    right: &[bool],
    wrap_ok: &[bool],
    width: usize,
    indent: usize,
) -> String {
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let gaps = 2 * (n - 1) + indent;
    // Shrink the widest wrappable column until it fits (not below 12 characters).
    while widths.iter().sum::<usize>() + gaps > width {
        let Some((i, _)) = widths
            .iter()
            .enumerate()
            .filter(|(i, w)| wrap_ok[*i] && **w > 12)
            .max_by_key(|(_, w)| **w)
        else {
            break;
        };
        widths[i] -= 1;
    }
    let mut out = String::new();
    let all: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().cloned())
        .collect();
    for r in &all {
        let cells: Vec<Vec<String>> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if c.chars().count() <= widths[i] {
                    vec![c.clone()]
                } else {
                    wrap(c, widths[i], " ")
                }
            })
            .collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            let mut line = " ".repeat(indent);
            for i in 0..n {
                let c = cells[i].get(k).map(String::as_str).unwrap_or("");
                let pad = widths[i].saturating_sub(c.chars().count());
                if right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < n {
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if i + 1 < n {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrapping_keeps_every_word_and_the_width() {
        let text = "the snapshot's partition 5 differs in 31 of 96 chunks, a_very_long_word_that_cannot_fit_anywhere_at_all here";
        for w in [20, 33, 80] {
            let lines = super::wrap(text, w, "    ");
            assert!(lines.iter().all(|l| l.chars().count() <= w), "{lines:?}");
            let joined: String = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
            assert_eq!(joined.replace(' ', ""), text.replace(' ', ""), "{lines:?}");
        }
    }

    #[test]
    fn a_table_too_wide_wraps_its_widest_column() {
        let rows = vec![
            vec![
                "partition 5 (ext4 \"data\" 1.0 GiB)".to_string(),
                "differs in 31 of 96 chunks and its superblock is gone".to_string(),
                "patch 31".to_string(),
                "31.0 MiB".to_string(),
            ],
            vec!["table".into(), "equal".into(), "keep".into(), "-".into()],
        ];
        let t = super::table(
            &["COMPONENT", "FOUND", "ACTION", "WRITE"],
            &rows,
            &[false, false, false, true],
            &[true, true, false, false],
            60,
            2,
        );
        assert!(t.lines().all(|l| l.chars().count() <= 60), "{t}");
        assert!(t.contains("patch 31") && t.contains("superblock"), "{t}");
    }

    #[test]
    fn sizes() {
        assert_eq!(super::bytes(440), "440 B");
        assert_eq!(super::bytes(1 << 20), "1.0 MiB");
        assert_eq!(super::bytes(3 << 29), "1.5 GiB");
    }
}
