//! Recordings of a sensor run (`sensor run --record DIR`) and their replay (`sensor test DIR`).
//!
//! A recording is one JSON file, `DIR/recording.json`: what ran (the target, relative to DIR,
//! its sensor, config overrides, trigger instances and state store), then one step per call
//! into the sensor (its start, each poll) with every host call it made and what it produced.
//! Replay runs the sensor's current code in the real sandbox, answers its clock, HTTP and file
//! reads from the recording, runs its state store, log and instances for real, and fails on the
//! first difference in host calls (state writes included), payloads or errors.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::PackCatalog;
use crate::sandbox::{
    InstanceFeed, Redactions, SensorEngine, SensorFailure, SensorInstance, SensorPayload, SensorSpec, StartError, Tape,
    TapeStep, TriggerInstance, redact_value,
};

/// The file a recording directory holds.
pub const RECORDING_FILE: &str = "recording.json";
const FORMAT: &str = "attune-recording/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// `attune-recording/1`.
    pub format: String,
    /// What ran (a pack directory, a sensor manifest, or a source or component file), relative
    /// to the recording's directory.
    pub target: PathBuf,
    /// The sensor's ref.
    pub sensor: String,
    /// `--config` overrides given when recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// The trigger instances the sensor was given.
    #[serde(default)]
    pub instances: Vec<RecordedInstance>,
    /// The state store before the start.
    #[serde(default)]
    pub state: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedInstance {
    pub rule: String,
    pub trigger: String,
    pub params: Value,
}

/// One call into the sensor: its start (instantiate, load, `init`) or a poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub call: StepKind,
    #[serde(flatten)]
    pub tape: TapeStep,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payloads: Vec<RecordedPayload>,
    /// How the call failed, as `sensor run` reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Start,
    Poll,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedPayload {
    pub trigger: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub payload: Value,
}

impl From<&SensorPayload> for RecordedPayload {
    fn from(p: &SensorPayload) -> Self {
        Self { trigger: p.trigger.clone(), rule: p.rule.clone(), payload: p.payload.clone() }
    }
}

/// Writes a recording step by step, so an interrupted run leaves a valid file.
#[derive(Debug)]
pub struct Recorder {
    file: PathBuf,
    recording: Recording,
    tape: Tape,
    redactions: Redactions,
}

impl Recorder {
    /// A recording into `dir` (created if missing) of `spec`, run from `target`. Each secret of
    /// `redactions` (value, `{{ secret.NAME }}`) is written as its reference.
    pub fn create(
        dir: &Path,
        target: &Path,
        spec: &SensorSpec,
        config: Option<Value>,
        instances: &InstanceFeed,
        state: &BTreeMap<String, String>,
        redactions: Redactions,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("--record {}: {e}", dir.display()))?;
        let target = relative_to(dir, target).map_err(|e| format!("--record {}: {e}", dir.display()))?;
        let instances = instances
            .current()
            .iter()
            .map(|i| RecordedInstance { rule: i.rule.clone(), trigger: i.trigger.clone(), params: i.params.clone() })
            .collect();
        let recording = Recording {
            format: FORMAT.into(),
            target,
            sensor: spec.sensor_ref.clone(),
            config,
            instances,
            state: state.clone(),
            steps: Vec::new(),
        };
        Ok(Self { file: dir.join(RECORDING_FILE), recording, tape: Tape::record(redactions.clone()), redactions })
    }

    pub fn tape(&self) -> Tape {
        self.tape.clone()
    }

    /// Adds the step just made, with its outcome, and writes the file.
    pub fn step(&mut self, call: StepKind, outcome: Result<&[SensorPayload], &str>) -> Result<(), String> {
        let (mut payloads, error) = match outcome {
            Ok(payloads) => (payloads.iter().map(RecordedPayload::from).collect::<Vec<_>>(), None),
            Err(error) => (Vec::new(), Some(error.to_string())),
        };
        for payload in &mut payloads {
            redact_value(&mut payload.payload, &self.redactions);
        }
        self.recording.steps.push(Step { call, tape: self.tape.take_step(), payloads, error });
        let text = serde_json::to_string_pretty(&self.recording).map_err(|e| e.to_string())?;
        std::fs::write(&self.file, text + "\n").map_err(|e| format!("{}: {e}", self.file.display()))
    }
}

impl Recording {
    /// Reads `dir/recording.json`.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let file = dir.join(RECORDING_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let recording: Recording = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        if recording.format != FORMAT {
            return Err(format!("{}: format `{}` (this host reads `{FORMAT}`)", file.display(), recording.format));
        }
        if recording.steps.first().map(|s| s.call) != Some(StepKind::Start) {
            return Err(format!("{}: the first step must be the start", file.display()));
        }
        Ok(recording)
    }

    /// The target, as a path from the working directory.
    pub fn target_from(&self, dir: &Path) -> PathBuf {
        dir.join(&self.target)
    }

    pub fn feed(&self) -> InstanceFeed {
        InstanceFeed::new(
            self.instances
                .iter()
                .map(|i| TriggerInstance { rule: i.rule.clone(), trigger: i.trigger.clone(), params: i.params.clone() })
                .collect(),
        )
    }
}

/// What a replay went through.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub polls: usize,
    pub host_calls: usize,
    pub payloads: usize,
}

/// Replays `recording` into `spec`'s current code; the first difference, named by step.
pub async fn replay(
    engine: &Arc<SensorEngine>,
    spec: Arc<SensorSpec>,
    catalog: &PackCatalog,
    recording: &Recording,
    describe_failure: impl Fn(&SensorFailure) -> String,
) -> Result<Replayed, String> {
    let tape = Tape::replay();
    let mut replayed = Replayed::default();
    let mut sensor = None;
    for (index, step) in recording.steps.iter().enumerate() {
        let name = match step.call {
            StepKind::Start => "start".to_string(),
            StepKind::Poll => format!("poll {index}"),
        };
        tape.expect(step.tape.clone());
        let outcome: Result<Vec<SensorPayload>, String> = match (step.call, sensor.as_mut()) {
            (StepKind::Start, None) => {
                let started = SensorInstance::start_taped(
                    engine,
                    spec.clone(),
                    recording.state.clone(),
                    recording.feed(),
                    Some(tape.clone()),
                )
                .await;
                match started {
                    Ok(started) => {
                        sensor = Some(started);
                        Ok(Vec::new())
                    }
                    Err(StartError::Load(e)) => return Err(format!("{name}: {e}")),
                    Err(StartError::Failed(failure)) => Err(describe_failure(&failure)),
                }
            }
            (StepKind::Poll, Some(sensor)) => {
                replayed.polls += 1;
                match sensor.poll().await {
                    Ok(output) => Ok(output.payloads),
                    Err(failure) => Err(describe_failure(&failure)),
                }
            }
            (StepKind::Start, Some(_)) => return Err(format!("{name}: a second start in the recording")),
            (StepKind::Poll, None) => return Err(format!("{name}: the recording polls a sensor that did not start")),
        };
        if let Some(difference) = tape.difference() {
            return Err(format!("{name}: {difference}"));
        }
        replayed.host_calls += step.tape.calls.len();
        let payloads = match (outcome, &step.error) {
            (Ok(payloads), None) => payloads,
            (Err(error), Some(expected)) if &error == expected => continue,
            (Err(error), Some(expected)) => {
                return Err(format!("{name}: failed with `{error}`; the recording failed with `{expected}`"));
            }
            (Err(error), None) => return Err(format!("{name}: failed with `{error}`; the recording did not fail")),
            (Ok(_), Some(expected)) => {
                return Err(format!("{name}: succeeded; the recording failed with `{expected}`"));
            }
        };
        for (i, payload) in payloads.iter().enumerate() {
            catalog
                .check_payload(&payload.trigger, &payload.payload)
                .map_err(|e| format!("{name}: payload {i}: {e}"))?;
        }
        let got: Vec<RecordedPayload> = payloads.iter().map(RecordedPayload::from).collect();
        if let Some(i) = (0..got.len().max(step.payloads.len())).find(|&i| got.get(i) != step.payloads.get(i)) {
            let show = |p: Option<&RecordedPayload>| p.map_or_else(|| "nothing".into(), json);
            return Err(format!(
                "{name}: payload {i}: the recording has {}, the sensor yielded {}",
                show(step.payloads.get(i)),
                show(got.get(i))
            ));
        }
        replayed.payloads += got.len();
    }
    Ok(replayed)
}

fn json(p: &RecordedPayload) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

/// `target` as a path from `dir` (both may be relative to the working directory).
fn relative_to(dir: &Path, target: &Path) -> std::io::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir)?;
    let target = std::fs::canonicalize(target)?;
    let common = dir.components().zip(target.components()).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = dir.components().skip(common).map(|_| Component::ParentDir).collect();
    path.extend(target.components().skip(common));
    Ok(if path.as_os_str().is_empty() { PathBuf::from(".") } else { path })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn targets_are_kept_relative_to_the_recording() {
        let root = tempfile::tempdir().unwrap();
        let pack = root.path().join("mypack");
        let recording = pack.join("tests/recording");
        std::fs::create_dir_all(&recording).unwrap();
        assert_eq!(relative_to(&recording, &pack).unwrap(), PathBuf::from("../.."));
        assert_eq!(relative_to(&pack, &pack).unwrap(), PathBuf::from("."));
        std::fs::write(pack.join("s.py"), "").unwrap();
        assert_eq!(relative_to(&recording, &pack.join("s.py")).unwrap(), PathBuf::from("../../s.py"));
    }
}
