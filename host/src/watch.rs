//! `sensor run --watch`: a run started again whenever a watched file changes, after an optional
//! build command. Files are polled (size and modification time), which works the same on every
//! filesystem and needs no watcher dependency; a pack is small.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the files are looked at.
const POLL_EVERY: Duration = Duration::from_millis(300);
/// Files looked at, at most: a watched directory is a pack, not a home directory.
const MAX_FILES: usize = 10_000;
/// Directories never watched: tools' output and caches.
const SKIPPED_DIRS: [&str; 5] = [".git", "node_modules", "__pycache__", ".venv", "data"];

/// What to watch and what to do before each run.
#[derive(Debug)]
pub struct Watch {
    /// A directory (watched recursively) or a file.
    pub root: PathBuf,
    /// Paths written by the run itself (a recording, a state file): their changes are ignored.
    pub ignored: Vec<PathBuf>,
    /// A shell command run before each run.
    pub build: Option<String>,
}

type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

impl Watch {
    /// Runs `run` now and after every change, until the process is interrupted. A run still
    /// going when a change comes is dropped (its sensor with it) and started again.
    pub async fn run<F, Fut>(&self, mut run: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let ignored: Vec<PathBuf> = self.ignored.iter().map(|p| absolute(p)).collect();
        loop {
            let built = self.build().await;
            // Taken after the build, so that its own output does not count as a change.
            let seen = snapshot(&self.root, &ignored);
            if built {
                tokio::select! {
                    result = run() => {
                        match result {
                            Ok(()) => eprintln!("watch: run finished; waiting for a change in {}", self.root.display()),
                            Err(e) => eprintln!("error: {e}\nwatch: waiting for a change in {}", self.root.display()),
                        }
                        changed(&self.root, &ignored, &seen).await;
                    }
                    () = changed(&self.root, &ignored, &seen) => {}
                }
            } else {
                changed(&self.root, &ignored, &seen).await;
            }
            eprintln!("watch: {} changed; running again", self.root.display());
        }
    }

    /// Runs the build command; false (reported) when it fails.
    async fn build(&self) -> bool {
        let Some(command) = &self.build else { return true };
        eprintln!("watch: {command}");
        match tokio::process::Command::new("sh").arg("-c").arg(command).status().await {
            Ok(status) if status.success() => true,
            Ok(status) => {
                eprintln!("watch: `{command}` failed ({status}); waiting for a change");
                false
            }
            Err(e) => {
                eprintln!("watch: cannot run `{command}`: {e}; waiting for a change");
                false
            }
        }
    }
}

/// Returns once the files differ from `seen`.
async fn changed(root: &Path, ignored: &[PathBuf], seen: &Snapshot) {
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        if &snapshot(root, ignored) != seen {
            return;
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Size and modification time of every file under `root` (or of `root` itself).
fn snapshot(root: &Path, ignored: &[PathBuf]) -> Snapshot {
    let mut files = Snapshot::new();
    let mut pending = vec![absolute(root)];
    while let Some(path) = pending.pop() {
        if files.len() >= MAX_FILES || ignored.iter().any(|i| path.starts_with(i)) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            let skipped = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| SKIPPED_DIRS.contains(&n));
            if skipped {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else {
            files.insert(path, (meta.len(), meta.modified().ok()));
        }
    }
    files
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_snapshot_sees_edits_but_not_ignored_or_skipped_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sensors")).unwrap();
        std::fs::create_dir_all(root.join("node_modules/x")).unwrap();
        std::fs::create_dir_all(root.join("tests/recording")).unwrap();
        std::fs::write(root.join("sensors/s.py"), "a").unwrap();
        let ignored = [root.join("tests/recording")];
        let before = snapshot(root, &ignored);
        assert_eq!(before.len(), 1);
        std::fs::write(root.join("node_modules/x/y.js"), "b").unwrap();
        std::fs::write(root.join("tests/recording/recording.json"), "{}").unwrap();
        assert_eq!(snapshot(root, &ignored), before);
        std::fs::write(root.join("sensors/s.py"), "ab").unwrap();
        assert_ne!(snapshot(root, &ignored), before);
    }
}
