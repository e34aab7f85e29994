//! Pack manifests. The input is YAML documents separated by `---` lines: `pack.yaml`, then one
//! trigger, one sensor, one rule and one action file. Each document is parsed as every kind of
//! manifest, then the documents are written out as a pack and checked as `pack validate` does
//! (`attune_host::pack::validate`: schemas, config, sensor limits, capabilities and entry,
//! templates, rules and their triggers), without loading sensor code. Never panics.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use attune_host::capabilities::AllowedHosts;
use attune_host::pack::{ActionManifest, PackManifest, SensorManifest, TriggerManifest, schema_errors, validate};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// Where the pack is written: this process's own directory under the temp dir, holding one pack.
static PACK_DIR: LazyLock<PathBuf> =
    LazyLock::new(|| std::env::temp_dir().join(format!("attune-fuzz-manifest-{}", std::process::id())).join("p"));

const FILES: [&str; 5] = ["pack.yaml", "triggers/t.yaml", "sensors/s.yaml", "rules/r.yaml", "actions/a.yaml"];

fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
        }
    }
    docs
}

fn parse_each(doc: &str) {
    if let Ok(pack) = serde_yaml_ng::from_str::<PackManifest>(doc) {
        let config = if pack.config.is_null() { json!({}) } else { pack.config.clone() };
        let _ = schema_errors(&pack.config_schema, &config, "config");
    }
    if let Ok(trigger) = serde_yaml_ng::from_str::<TriggerManifest>(doc) {
        let _ = trigger.param_errors(&Map::from_iter([("url".to_owned(), json!("http://127.0.0.1/"))]));
        if let Some(schema) = &trigger.payload_schema {
            let _ = schema_errors(schema, &json!({"status": 200, "ok": true}), "payload");
        }
    }
    if let Ok(sensor) = serde_yaml_ng::from_str::<SensorManifest>(doc) {
        let _ = sensor.limits.validate();
        let _ = AllowedHosts::parse(&sensor.capabilities.http);
    }
    let _ = serde_yaml_ng::from_str::<ActionManifest>(doc);
}

/// A plain file name (no separators, no `..`), so the harness can create the sensor's code file.
fn plain_entry(sensor: &str) -> Option<String> {
    let value: Value = serde_yaml_ng::from_str(sensor).ok()?;
    let entry = value.get("entry")?.as_str()?;
    let plain = !entry.is_empty()
        && entry.len() < 64
        && entry.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !entry.starts_with('.');
    plain.then(|| entry.to_owned())
}

fn write_pack(dir: &Path, docs: &[String]) -> std::io::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    for sub in ["triggers", "sensors", "rules", "actions", "inbox"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    for (doc, file) in docs.iter().zip(FILES) {
        fs::write(dir.join(file), doc)?;
    }
    if let Some(entry) = docs.get(2).and_then(|s| plain_entry(s)) {
        fs::write(dir.join("sensors").join(entry), "def poll(config):\n    return []\n")?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let docs = documents(text);
    for doc in &docs {
        parse_each(doc);
    }
    write_pack(&PACK_DIR, &docs).expect("the fuzz pack directory is writable");
    if let Ok(validation) = validate(&PACK_DIR) {
        for report in &validation.reports {
            for error in &report.errors {
                let _ = error.to_string();
            }
        }
    }
});
