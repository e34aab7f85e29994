//! Sensor state kept in a local JSON file, for `attune-host sensor run`. (The service keeps it
//! in its database, committed with the poll's events.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::sandbox::{StateDelta, apply_delta};

#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: BTreeMap<String, String>,
}

impl StateFile {
    /// Opens `path`; a missing file is an empty state.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let state = match std::fs::read_to_string(path) {
            // An empty file (e.g. one just created with `touch` or mktemp) is an empty state.
            Ok(text) if text.trim().is_empty() => BTreeMap::new(),
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}: not a state file", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        };
        Ok(Self { path: path.to_path_buf(), state })
    }

    pub fn state(&self) -> &BTreeMap<String, String> {
        &self.state
    }

    /// Applies a poll's writes and saves the file (through a rename, so a crash leaves the old
    /// or the new state, never half of one).
    pub fn commit(&mut self, delta: &StateDelta) -> anyhow::Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        apply_delta(&mut self.state, delta);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?).with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("{}", self.path.display()))
    }
}
