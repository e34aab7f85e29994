//! DST in two zones. 2026: Europe/Paris springs forward on 29 March (02:00 CET -> 03:00 CEST) and
//! falls back on 25 October (03:00 CEST -> 02:00 CET); America/New_York springs forward on 8 March
//! (02:00 EST -> 03:00 EDT) and falls back on 1 November (02:00 EDT -> 01:00 EST).

use super::{cron, next_n, preview_n};

#[test]
fn paris_spring_forward_gap_fires_once_just_after_the_gap() {
    let spec = cron("30 2 * * *", "Europe/Paris");
    assert_eq!(
        preview_n(&spec, "2026-03-27T12:00:00Z", 3),
        ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
    assert_eq!(
        next_n(&spec, "2026-03-27T12:00:00Z", 3),
        ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
}

#[test]
fn paris_fall_back_repeated_hour_fires_once() {
    let spec = cron("30 2 * * *", "Europe/Paris");
    assert_eq!(
        preview_n(&spec, "2026-10-23T12:00:00Z", 3),
        ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    // Asked from inside the second pass of the repeated hour: the job already ran, next is tomorrow.
    assert_eq!(next_n(&spec, "2026-10-25T01:10:00Z", 1), ["2026-10-26T01:30:00Z"]);
    // Asked from the first pass, before 02:30 CEST: today, once.
    assert_eq!(next_n(&spec, "2026-10-25T00:10:00Z", 2), ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
}

#[test]
fn new_york_spring_forward_gap_fires_once_just_after_the_gap() {
    let spec = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        preview_n(&spec, "2026-03-06T12:00:00Z", 3),
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
}

#[test]
fn new_york_fall_back_repeated_hour_fires_once() {
    let spec = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        preview_n(&spec, "2026-10-30T12:00:00Z", 3),
        ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    assert_eq!(next_n(&spec, "2026-11-01T06:10:00Z", 1), ["2026-11-02T06:30:00Z"]);
}

#[test]
fn several_fixed_times_inside_one_gap_share_one_fire() {
    let spec = cron("0,30 2 * * *", "Europe/Paris");
    assert_eq!(
        preview_n(&spec, "2026-03-28T12:00:00Z", 3),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
}

#[test]
fn fixed_times_in_a_list_of_hours_fire_once_in_the_repeated_hour() {
    let spec = cron("30 1,2 * * *", "America/New_York");
    assert_eq!(
        preview_n(&spec, "2026-11-01T04:00:00Z", 3),
        ["2026-11-01T01:30:00-04:00", "2026-11-01T02:30:00-05:00", "2026-11-02T01:30:00-05:00"]
    );
}

#[test]
fn wildcard_jobs_keep_real_time_cadence_through_both_changes() {
    let spec = cron("*/30 * * * *", "America/New_York");
    // Fall back: 01:00 and 01:30 happen twice, 30 real minutes apart throughout.
    assert_eq!(
        preview_n(&spec, "2026-11-01T04:40:00Z", 6),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T02:30:00-05:00",
        ]
    );
    // Spring forward: 02:00 and 02:30 never show; 01:30 EST to 03:00 EDT is 30 real minutes.
    assert_eq!(
        preview_n(&spec, "2026-03-08T06:10:00Z", 3),
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]
    );
    // From inside the first pass of the repeated hour, the second pass still comes.
    assert_eq!(next_n(&spec, "2026-11-01T05:45:00Z", 2), ["2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"]);
}

#[test]
fn hourly_job_fires_every_real_hour_in_paris_fall_back() {
    let spec = cron("15 * * * *", "Europe/Paris");
    assert_eq!(
        next_n(&spec, "2026-10-24T23:30:00Z", 4),
        ["2026-10-25T00:15:00Z", "2026-10-25T01:15:00Z", "2026-10-25T02:15:00Z", "2026-10-25T03:15:00Z"]
    );
}

#[test]
fn zones_without_dst_and_half_hour_dst() {
    // Asia/Kolkata: +05:30, no DST.
    let spec = cron("0 9 * * *", "Asia/Kolkata");
    assert_eq!(preview_n(&spec, "2026-03-01T00:00:00Z", 1), ["2026-03-01T09:00:00+05:30"]);
    // Australia/Lord_Howe moves by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
    let spec = cron("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        preview_n(&spec, "2026-10-02T12:00:00Z", 3),
        ["2026-10-03T02:15:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    );
}
