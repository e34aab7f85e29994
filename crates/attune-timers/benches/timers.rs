//! Benchmark: 10,000 interval timers in one scheduler.
//!
//! Run (release):
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-timers cargo bench -p attune-timers --bench timers
//! ```
//!
//! Environment: `TIMERS_BENCH_SECONDS` (length of the busy run, default 30), `TIMERS_BENCH_TIMERS`
//! (default 10000), `TIMERS_BENCH_INTERVAL` (seconds, default 1), `TIMERS_BENCH_IDLE_SECONDS`
//! (length of the idle run, default 10), `TIMERS_BENCH_BASELINE_SECONDS` (default 5),
//! `TIMERS_BENCH_BURST_SECONDS` (default 10).
//!
//! Baseline: a bare tokio `sleep_until` loop, to show the machine's own timer jitter (on a shared
//! 2-core machine, other work shows up here and in the tail lateness below).
//!
//! Busy run: every timer fires every interval, anchors spread evenly over one interval (10,000
//! fires/s by default), through a memory store and a sink that records `fired_at − scheduled_at`.
//! Reports lateness percentiles, process CPU time / wall time (from /proc/self/stat), whether
//! every scheduled instant is on its timer's grid (`anchor + k·interval`, exactly), missing or
//! repeated instants, and lateness early vs late in the run (drift would show as growth).
//! Burst run: the same number of cron timers all due at the same second (worst case for one
//! scheduler: every fire of a second is dispatched in one go).
//! Idle run: the same number of timers every hour (none due during the run): the cost of keeping
//! them scheduled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use attune_timers::{
    BoxError, Fire, FireSink, INTERVAL_TRIGGER, MemoryTimerStore, Scheduler, SchedulerConfig, SystemClock, TimerSpec,
    micros,
};
use chrono::{TimeDelta, Utc};

#[derive(Debug, Default)]
struct Recorder {
    /// (timer index, scheduled µs, lateness µs)
    fires: Mutex<Vec<(u32, i64, i64)>>,
}

#[async_trait]
impl FireSink for Recorder {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        let fired = fire.state_after.last_fire_at.map(micros).unwrap_or_default();
        let scheduled = micros(fire.scheduled_at);
        let index = fire.rule_ref.strip_prefix("rule-").and_then(|n| n.parse().ok()).unwrap_or(u32::MAX);
        self.fires.lock().unwrap_or_else(|p| p.into_inner()).push((index, scheduled, fired - scheduled));
        Ok(())
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(us: i64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

async fn busy(timers: u32, interval_s: i64, seconds: u64) {
    let store = Arc::new(MemoryTimerStore::new());
    // Room for every fire of the run, so recording never reallocates mid-run.
    let room = timers as usize * (seconds as usize + interval_s as usize + 5) / interval_s as usize;
    let sink = Arc::new(Recorder { fires: Mutex::new(Vec::with_capacity(room)) });
    let handle = Scheduler::start(store.clone(), sink.clone(), Arc::new(SystemClock), SchedulerConfig::default());
    let every = interval_s * 1_000_000;
    let start = Utc::now() + TimeDelta::seconds(3);
    let mut anchors = HashMap::new();
    let setup = Instant::now();
    for i in 0..timers {
        let anchor = start + TimeDelta::microseconds(every * i64::from(i) / i64::from(timers));
        anchors.insert(i, micros(anchor));
        let params = serde_json::json!({"interval": interval_s, "anchor": anchor.to_rfc3339()});
        let spec = TimerSpec::parse(INTERVAL_TRIGGER, &params).unwrap_or_else(|e| panic!("{e}"));
        handle.upsert(&format!("rule-{i}"), spec).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let setup = setup.elapsed();
    // Let the first round pass, then measure.
    let warm_until = start + TimeDelta::microseconds(every);
    tokio::time::sleep((warm_until - Utc::now()).to_std().unwrap_or_default()).await;
    sink.fires.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let (cpu0, wall0, t0) = (cpu_seconds(), Instant::now(), micros(Utc::now()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, wall) = (cpu_seconds(), wall0.elapsed());
    let t1 = micros(Utc::now());
    handle.shutdown().await;

    let fires = sink.fires.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut late: Vec<i64> = fires.iter().map(|f| f.2).collect();
    late.sort_unstable();
    let off_grid = fires.iter().filter(|(i, s, _)| anchors.get(i).is_none_or(|a| (s - a) % every != 0)).count();
    // Per timer: instants expected in [t0, t1 - 1 s] (fires of the last second may be in flight).
    let mut seen: HashMap<u32, Vec<i64>> = HashMap::new();
    for (i, s, _) in &fires {
        seen.entry(*i).or_default().push(*s);
    }
    let (mut missing, mut repeated) = (0_usize, 0_usize);
    for (i, anchor) in &anchors {
        let mut got = seen.remove(i).unwrap_or_default();
        let before = got.len();
        got.sort_unstable();
        got.dedup();
        repeated += before - got.len();
        let first_k = (t0 - anchor + every - 1).div_euclid(every).max(0);
        let mut k = first_k;
        while anchor + k * every <= t1 - 1_000_000 {
            if got.binary_search(&(anchor + k * every)).is_err() {
                missing += 1;
            }
            k += 1;
        }
    }
    // Timer 0: last scheduled − anchor against k·interval.
    let zero: Vec<i64> = fires.iter().filter(|f| f.0 == 0).map(|f| f.1).collect();
    let anchor0 = anchors.get(&0).copied().unwrap_or_default();
    let last0 = zero.last().copied().unwrap_or(anchor0);
    let k0 = (last0 - anchor0) / every;
    // Lateness early vs late in the run.
    let tenth = fires.len() / 10;
    let mut early: Vec<i64> = fires[..tenth].iter().map(|f| f.2).collect();
    let mut end: Vec<i64> = fires[fires.len() - tenth..].iter().map(|f| f.2).collect();
    early.sort_unstable();
    end.sort_unstable();
    let mean = |v: &[i64]| if v.is_empty() { 0 } else { v.iter().sum::<i64>() / v.len() as i64 };

    println!("## Busy: {timers} interval timers every {interval_s} s, {seconds} s run\n");
    println!("| metric | value |\n|---|---|");
    println!("| setup (upsert {timers} timers) | {:.0} ms |", setup.as_secs_f64() * 1000.0);
    println!("| fires | {} ({:.0}/s) |", fires.len(), fires.len() as f64 / wall.as_secs_f64());
    println!("| lateness p50 | {} |", ms(percentile(&late, 50.0)));
    println!("| lateness p99 | {} |", ms(percentile(&late, 99.0)));
    println!("| lateness p99.9 | {} |", ms(percentile(&late, 99.9)));
    println!("| lateness max | {} |", ms(late.last().copied().unwrap_or(0)));
    println!("| lateness < 0 (fired early) | {} |", late.iter().filter(|l| **l < 0).count());
    println!("| CPU (user+sys) / wall | {:.1} % of a core |", (cpu1 - cpu0) / wall.as_secs_f64() * 100.0);
    println!("| instants off their grid (anchor + k·interval) | {off_grid} |");
    println!("| instants missing / repeated | {missing} / {repeated} |");
    println!(
        "| timer 0: last scheduled − anchor | {} µs = {k0} × {every} µs + {} µs |",
        last0 - anchor0,
        last0 - anchor0 - k0 * every
    );
    println!(
        "| lateness first 10 % vs last 10 % of the run (mean, p99) | {} / {} vs {} / {} |",
        ms(mean(&early)),
        ms(percentile(&early, 99.0)),
        ms(mean(&end)),
        ms(percentile(&end, 99.0))
    );
    println!();
}

/// All timers due at the same instants: every timer is a cron `* * * * * *` (every second).
async fn burst(timers: u32, seconds: u64) {
    let store = Arc::new(MemoryTimerStore::new());
    let room = timers as usize * (seconds as usize + 5);
    let sink = Arc::new(Recorder { fires: Mutex::new(Vec::with_capacity(room)) });
    let handle = Scheduler::start(store, sink.clone(), Arc::new(SystemClock), SchedulerConfig::default());
    let spec = TimerSpec::parse(attune_timers::CRON_TRIGGER, &serde_json::json!({"expression": "* * * * * *"}))
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..timers {
        handle.upsert(&format!("rule-{i}"), spec.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.fires.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let (cpu0, wall0, t0) = (cpu_seconds(), Instant::now(), micros(Utc::now()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, wall, t1) = (cpu_seconds(), wall0.elapsed(), micros(Utc::now()));
    handle.shutdown().await;
    let fires = sink.fires.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut late: Vec<i64> = fires.iter().map(|f| f.2).collect();
    late.sort_unstable();
    let mut keys: Vec<(u32, i64)> = fires.iter().map(|f| (f.0, f.1)).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    let repeated = before - keys.len();
    // Whole seconds in (t0, t1 - 1 s], each expected once per timer.
    let first = t0.div_euclid(1_000_000) + 1;
    let last = (t1 - 1_000_000).div_euclid(1_000_000);
    let expected = (last - first + 1).max(0) as usize * timers as usize;
    let in_window = keys.iter().filter(|(_, s)| (first * 1_000_000..=last * 1_000_000).contains(s)).count();
    println!("## Burst: {timers} cron timers `* * * * * *`, all due at the same instants, {seconds} s run\n");
    println!("| metric | value |\n|---|---|");
    println!("| fires | {} ({:.0}/s) |", fires.len(), fires.len() as f64 / wall.as_secs_f64());
    println!("| lateness p50 | {} |", ms(percentile(&late, 50.0)));
    println!("| lateness p99 | {} |", ms(percentile(&late, 99.0)));
    println!("| lateness max | {} |", ms(late.last().copied().unwrap_or(0)));
    println!("| CPU (user+sys) / wall | {:.1} % of a core |", (cpu1 - cpu0) / wall.as_secs_f64() * 100.0);
    println!("| instants missing / repeated | {} / {repeated} |", expected.saturating_sub(in_window));
    println!();
}

/// The machine's own timer jitter: one task sleeping until deadlines 1.3 ms apart.
async fn baseline(seconds: u64) {
    let start = tokio::time::Instant::now();
    let cpu0 = cpu_seconds();
    let mut next = start;
    let mut late = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        next += Duration::from_micros(1_300);
        tokio::time::sleep_until(next).await;
        late.push(i64::try_from(next.elapsed().as_micros()).unwrap_or(i64::MAX));
    }
    let cpu = (cpu_seconds() - cpu0) / start.elapsed().as_secs_f64() * 100.0;
    late.sort_unstable();
    println!("## Baseline: a bare `sleep_until` loop on this machine, {seconds} s\n");
    println!("| metric | value |\n|---|---|");
    println!(
        "| lateness p50 / p99 / max | {} / {} / {} |",
        ms(percentile(&late, 50.0)),
        ms(percentile(&late, 99.0)),
        ms(late.last().copied().unwrap_or(0))
    );
    println!("| CPU (user+sys) / wall, {} wake-ups/s | {cpu:.1} % of a core |", late.len() as u64 / seconds.max(1));
    println!();
}

async fn idle(timers: u32, seconds: u64) {
    let store = Arc::new(MemoryTimerStore::new());
    let sink = Arc::new(Recorder::default());
    let handle = Scheduler::start(store, sink.clone(), Arc::new(SystemClock), SchedulerConfig::default());
    let start = Utc::now() + TimeDelta::hours(1);
    for i in 0..timers {
        let anchor = start + TimeDelta::milliseconds(i64::from(i));
        let params = serde_json::json!({"interval": 1, "unit": "hours", "anchor": anchor.to_rfc3339()});
        let spec = TimerSpec::parse(INTERVAL_TRIGGER, &params).unwrap_or_else(|e| panic!("{e}"));
        handle.upsert(&format!("rule-{i}"), spec).await.unwrap_or_else(|e| panic!("{e}"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, wall) = (cpu_seconds(), wall0.elapsed());
    handle.shutdown().await;
    println!("## Idle: {timers} timers every hour (none due), {seconds} s run\n");
    println!("| metric | value |\n|---|---|");
    println!("| CPU (user+sys) / wall | {:.2} % of a core |", (cpu1 - cpu0) / wall.as_secs_f64() * 100.0);
    println!("| fires | {} |", sink.fires.lock().unwrap_or_else(|p| p.into_inner()).len());
    println!();
}

fn main() {
    let timers: u32 = env_or("TIMERS_BENCH_TIMERS", 10_000);
    let seconds: u64 = env_or("TIMERS_BENCH_SECONDS", 30);
    let interval: i64 = env_or("TIMERS_BENCH_INTERVAL", 1);
    let idle_seconds: u64 = env_or("TIMERS_BENCH_IDLE_SECONDS", 10);
    let baseline_seconds: u64 = env_or("TIMERS_BENCH_BASELINE_SECONDS", 5);
    let burst_seconds: u64 = env_or("TIMERS_BENCH_BURST_SECONDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    println!("# attune-timers benchmark ({} CPUs)\n", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("Load average before the run: {}\n", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    runtime.block_on(baseline(baseline_seconds));
    runtime.block_on(busy(timers, interval.max(1), seconds));
    runtime.block_on(burst(timers, burst_seconds));
    runtime.block_on(idle(timers, idle_seconds));
}
