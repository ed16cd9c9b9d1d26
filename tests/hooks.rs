//! Test hooks (crash points, a fake efivarfs directory) exist only in test builds: the release
//! and static binaries ignore RESTORE_FAILPOINT and RESTORE_EFIVARS. scripts/test.sh names
//! them in RESTORE_RELEASE_BIN and RESTORE_STATIC_BIN.

mod common;
use common::*;

#[test]
fn release_and_static_binaries_ignore_the_test_hooks() {
    let bins: Vec<String> = ["RESTORE_RELEASE_BIN", "RESTORE_STATIC_BIN"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    if bins.is_empty() {
        assert!(
            !in_ci(),
            "CI is set but RESTORE_RELEASE_BIN / RESTORE_STATIC_BIN are not: run scripts/test.sh"
        );
        eprintln!("SKIPPED: no release or static binary named (scripts/test.sh names them)");
        return;
    }
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    let vars = tmp.path("efivars");
    std::fs::create_dir_all(&vars).unwrap();
    std::fs::write(
        vars.join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [7, 0, 0, 0, 0, 0],
    )
    .unwrap();
    for bin in bins {
        let run = |args: &[&str], env: &[(&str, &str)]| {
            let mut c = std::process::Command::new(&bin);
            c.args(args);
            for (k, v) in env {
                c.env(k, v);
            }
            c.output().unwrap()
        };
        let version = text(&run(&["--version"], &[]));
        assert!(!version.contains("test hooks"), "{bin}: {version}");
        let store = tmp
            .path(&format!("store-{}", bin.len()))
            .display()
            .to_string();
        // A capture on a "UEFI system" would record its NVRAM: these binaries see none.
        let o = run(
            &[
                "capture",
                "--store",
                &store,
                "--host",
                "h",
                "--no-progress",
                p(&src),
            ],
            &[
                ("RESTORE_EFIVARS", p(&vars)),
                ("RESTORE_FAILPOINT", "before-manifest:1"),
            ],
        );
        assert!(
            o.status.success(),
            "{bin}: the failpoint must be ignored: {}",
            text(&o)
        );
        let m = text(&run(&["show", "latest", "--json", "--store", &store], &[]));
        assert!(
            !m.contains("\"nvram\""),
            "{bin}: RESTORE_EFIVARS must be ignored"
        );
        let target = tmp.path("t.img");
        blank(&target, 96 * MIB);
        let o = run(
            &[
                "apply",
                "--store",
                &store,
                "--yes",
                "--no-progress",
                p(&target),
            ],
            &[("RESTORE_FAILPOINT", "before-data:1")],
        );
        assert!(o.status.success(), "{bin}: {}", text(&o));
        assert_same(&src, &target);
    }
}
