//! The README's tutorial, run as written: every fenced block tagged `tutorial=<track>` of one
//! track, in order, as one bash script in an empty directory (`sh` blocks are commands; blocks
//! with `file=PATH` are written to PATH, relative to the directory the script is in at that
//! point). The `tutorial=setup` block is what `make test` has done already: the test gives the
//! script the same PATH (`.venv/bin`, the debug `attune-host`), runtimes and `ATTUNE_REPO`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{repo, settings};

/// The script of one track: its `sh` blocks, and heredocs for its file blocks.
fn script(readme: &str, track: &str) -> String {
    let tag = format!("tutorial={track}");
    let mut script = String::from("set -euo pipefail\n");
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let words: Vec<&str> = info.split_whitespace().collect();
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        if !words.contains(&tag.as_str()) {
            continue;
        }
        match words.iter().find_map(|w| w.strip_prefix("file=")) {
            Some(file) => {
                script.push_str(&format!("cat > {file} <<'TUTORIAL_EOF'\n{}\nTUTORIAL_EOF\n", body.join("\n")));
            }
            None => {
                script.push_str(&body.join("\n"));
                script.push('\n');
            }
        }
    }
    script
}

fn follow(track: &str) {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let script = script(&readme, track);
    assert!(script.contains("attune-host serve"), "{track}: no tutorial blocks found in README.md");
    let dir = tempfile::tempdir().unwrap();
    let settings = settings();
    let path = format!(
        "{}:{}:{}:{}",
        repo().join(".venv/bin").display(),
        Path::new(env!("CARGO_BIN_EXE_attune-host")).parent().unwrap().display(),
        repo().join("sdk-js/node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("ATTUNE_RUNTIMES_DIR", &settings.runtimes_dir)
        .env("ATTUNE_CACHE_DIR", &settings.cache_dir)
        .env("ATTUNE_REPO", repo())
        .env("NO_COLOR", "1")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Whatever the script left running (a feed, the service) goes with it, also on a timeout.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(240));
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    });
    let output = child.wait_with_output().unwrap();
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    drop(killer);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{track} tutorial failed ({:?})\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(stdout.contains(r#""rule":"weather.on_new_item""#), "{track}: no enforcement shown\n{stdout}");
    eprintln!("{track} tutorial: {:.1} s", started.elapsed().as_secs_f64());
}

/// Both tracks, one after the other: they use the same ports.
#[test]
fn the_tutorial_runs_as_written_in_python_and_javascript() {
    follow("python");
    follow("js");
}
