//! Timer `trigger_params`: the first line is an instant (`timer preview --after`), the rest the
//! params as JSON. Parsed for each timer trigger; for each valid one, the next fire times from
//! fixed instants (and the given one) must each be strictly later than the last, and previews
//! must end (libFuzzer's -timeout catches a loop). Never panics.
#![no_main]

use std::sync::LazyLock;

use attune_rules::chrono::{DateTime, Utc};
use attune_timers::{TIMER_TRIGGERS, TimerSpec, preview_lines};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// 2026-03-06T12:00Z, the Paris spring-forward and New York fall-back nights of 2026, the epoch,
/// and the last second RFC 3339 can write.
static STARTS: LazyLock<Vec<DateTime<Utc>>> = LazyLock::new(|| {
    [
        "2026-03-06T12:00:00Z",
        "2026-03-29T00:59:59Z",
        "2026-11-01T05:30:00Z",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ]
    .iter()
    .filter_map(|t| t.parse().ok())
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (after_text, params_text) = text.split_once('\n').unwrap_or(("2026-03-06T12:00:00Z", text));

    // `attune-host timer preview PARAMS --after T --count 8`
    if let Ok(lines) = preview_lines(params_text, Some(after_text), 8) {
        assert!(lines.len() <= 8);
    }

    let Ok(params) = serde_json::from_str::<Value>(params_text) else { return };
    let _ = TimerSpec::infer_trigger(&params);
    let after = DateTime::parse_from_rfc3339(after_text).ok().map(|t| t.with_timezone(&Utc));
    let now = STARTS[0];
    for trigger in TIMER_TRIGGERS {
        let parsed = TimerSpec::parse(trigger, &params);
        let new = TimerSpec::parse_new(trigger, &params, now);
        if new.is_ok() {
            assert!(parsed.is_ok(), "parse_new accepted what parse refused");
        }
        let spec = match parsed {
            Ok(spec) => spec,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        assert_eq!(spec.trigger_ref(), trigger);
        for &start in STARTS.iter().chain(after.iter()) {
            let mut t = start;
            for _ in 0..8 {
                let Some(next) = spec.next_after(t) else { break };
                assert!(next > t, "next_after({t}) = {next} is not later");
                t = next;
            }
            let _ = spec.payload(t, t, 1);
            let preview = spec.preview(start, 8);
            assert!(preview.len() <= 8);
            assert!(preview.windows(2).all(|w| w[0] < w[1]), "preview not increasing: {preview:?}");
        }
    }
});
