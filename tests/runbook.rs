//! docs/runbook.md cannot drift: every ```console block in it is run here, command by command,
//! against the sample incident (a 1 GiB server disk "web-3" captured to a store, then its boot
//! code, primary GPT header and BIOS boot partition destroyed), and the output must be what
//! the runbook shows. `/mnt/backup` stands for the store and `/dev/sda` for the damaged disk.
//!
//! Compared modulo what differs from run to run (snapshot ids, times, durations, rates) and
//! modulo line breaks and spacing (the sample's paths are longer than /dev/sda, so lines wrap
//! elsewhere). An apply whose output shows the confirmation prompt is run with --yes, and the
//! prompt's lines are not compared. `UPDATE_RUNBOOK=1` rewrites the outputs in the runbook from
//! this run.

mod common;
use common::*;
use std::path::Path;

const DISK: u64 = 1 << 30;

struct Block {
    /// Byte range of the block's body in the document.
    start: usize,
    end: usize,
    steps: Vec<(String, String)>,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(open) = doc[pos..].find("```console\n") {
        let start = pos + open + "```console\n".len();
        let end = start + doc[start..].find("```").expect("an unclosed console block");
        let mut steps: Vec<(String, String)> = Vec::new();
        for line in doc[start..end].lines() {
            if let Some(cmd) = line.strip_prefix("$ ") {
                steps.push((cmd.to_string(), String::new()));
            } else if let Some(last) = steps.last_mut() {
                last.1.push_str(line);
                last.1.push('\n');
            }
        }
        out.push(Block { start, end, steps });
        pos = end + 3;
    }
    out
}

/// Words of `text` with what changes between runs replaced by placeholders, and without the
/// confirmation prompt.
fn normal(text: &str) -> Vec<String> {
    let mut keep = Vec::new();
    let mut prompt = false;
    for line in text.lines() {
        if line.starts_with("About to write:") {
            prompt = true;
        }
        if !prompt {
            // The version line of a report: its commit changes with every commit.
            let version = line
                .strip_prefix("restore ")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
            keep.push(if version { "restore VERSION" } else { line });
        }
        if line.starts_with("Type yes to continue:") {
            prompt = false;
        }
    }
    let joined = keep.join(" ");
    let words: Vec<&str> = joined.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).copied().unwrap_or("");
        // "0.3 s", "12 s", "3 min": a duration; "120.5 MiB/s": a rate.
        let num = w.trim_start_matches('(');
        if num.parse::<f64>().is_ok() && (next.starts_with("s") && next.len() <= 2 || next == "min")
        {
            out.push("DURATION".into());
            i += 2;
            continue;
        }
        if w.parse::<f64>().is_ok() && next.ends_with("/s") {
            out.push("RATE".into());
            i += 2;
            continue;
        }
        // 2026-12-04 10:49:51: a date and a time.
        if is_date(w) {
            out.push("DATE".into());
            i += if next.len() == 8 && next.chars().filter(|c| *c == ':').count() == 2 {
                2
            } else {
                1
            };
            continue;
        }
        out.push(mask(w));
        i += 1;
    }
    out
}

fn is_date(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// One word with ids and timestamps masked.
fn mask(w: &str) -> String {
    let b = w.as_bytes();
    let mut s = String::new();
    let mut i = 0;
    while i < b.len() {
        // 20261204T021500Z (a snapshot id's or a report's time), with its suffix.
        if i + 16 <= b.len()
            && b[i..i + 8].iter().all(u8::is_ascii_digit)
            && b[i + 8] == b'T'
            && b[i + 9..i + 15].iter().all(u8::is_ascii_digit)
        {
            let mut j = i + 15;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-') && b[j] != b'.' {
                j += 1;
            }
            s.push_str("STAMP");
            i = j;
            continue;
        }
        // 2026-12-04T02:15:00.123Z
        if i + 20 <= b.len()
            && b[i + 4] == b'-'
            && b[i + 10] == b'T'
            && b[i..i + 4].iter().all(u8::is_ascii_digit)
        {
            let mut j = i + 11;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b':' || b[j] == b'.') {
                j += 1;
            }
            if j < b.len() && b[j] == b'Z' {
                j += 1;
            }
            s.push_str("TIME");
            i = j;
            continue;
        }
        s.push(b[i] as char);
        i += 1;
    }
    s
}

#[test]
fn the_runbook_shows_what_the_commands_print() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, DISK, &tmp);
    capture(&tmp, "web-3", &[&src]);
    // The incident: boot code and primary GPT header zeroed, BIOS boot partition overwritten.
    let sda = tmp.path("sda.img");
    std::fs::copy(&src, &sda).unwrap();
    write_at(&sda, 0, &[0u8; 440]);
    write_at(&sda, 512, &[0u8; 512]);
    write_at(&sda, MIB, &random_bytes(1000, MIB as usize));
    let store = tmp.store();
    let subst = |s: &str| {
        s.replace("/mnt/backup", &store)
            .replace("/dev/sda", p(&sda))
    };
    let home = tmp.dir.path().display().to_string();
    let back = |s: &str| {
        s.replace(&store, "/mnt/backup")
            .replace(p(&sda), "/dev/sda")
            .replace(&home, "/root")
    };
    let all = blocks(&doc);
    assert!(all.len() >= 4, "the runbook has too few console blocks");
    let mut updated = doc.clone();
    let mut ran = 0;
    // Outputs are replaced from the last block backwards so offsets stay valid.
    let mut replacements: Vec<(usize, usize, String)> = Vec::new();
    for b in &all {
        let mut body = String::new();
        for (cmd, expected) in &b.steps {
            let mut args: Vec<String> = cmd.split_whitespace().map(subst).collect();
            assert_eq!(args[0], "restore", "only restore commands run here: {cmd}");
            args.remove(0);
            if args[0] == "apply" && expected.contains("Type yes to continue:") {
                args.push("--yes".into());
            }
            let o = std::process::Command::new(bin())
                .args(&args)
                .current_dir(tmp.dir.path())
                .env("COLUMNS", "80")
                .env_remove("RESTORE_STORE")
                .env_remove("RESTORE_NOTIFY")
                .output()
                .unwrap();
            let got = back(&text(&o));
            ran += 1;
            let want = normal(expected);
            let have = normal(&got);
            if std::env::var_os("UPDATE_RUNBOOK").is_none() {
                assert_eq!(
                    have.join(" "),
                    want.join(" "),
                    "docs/runbook.md: `{cmd}` prints something else now (UPDATE_RUNBOOK=1 rewrites it):\n{got}"
                );
            }
            body.push_str(&format!("$ {cmd}\n"));
            if expected.contains("Type yes to continue:") {
                // Keep the documented prompt, which this run answered with --yes.
                let (before, rest) = got.split_at(got.find("Applied").unwrap_or(got.len()));
                body.push_str(before);
                for l in expected
                    .lines()
                    .skip_while(|l| !l.starts_with("About to write:"))
                {
                    body.push_str(l);
                    body.push('\n');
                    if l.starts_with("Type yes to continue:") {
                        break;
                    }
                }
                body.push_str(rest);
            } else {
                body.push_str(&got);
            }
        }
        replacements.push((b.start, b.end, body));
    }
    if std::env::var_os("UPDATE_RUNBOOK").is_some() {
        for (start, end, body) in replacements.into_iter().rev() {
            updated.replace_range(start..end, &body);
        }
        std::fs::write(&doc_path, updated).unwrap();
    }
    assert!(ran >= 5, "only {ran} commands ran");
    // The incident is repaired: the disk equals the captured one.
    assert_same(&src, &sda);
}
