//! Durations as people write them in settings and flags: a whole number and a unit, `30s`,
//! `15m`, `12h`, `7d`.

use std::time::Duration;

/// `30s`, `15m`, `12h` or `7d`; `None` for anything else, zero included.
pub fn parse(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    let number: u64 = number.parse().ok().filter(|n| *n > 0)?;
    number.checked_mul(seconds_per_unit).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_with_a_unit() {
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("7d"), Some(Duration::from_secs(7 * 86_400)));
        for bad in ["", "7", "d", "0d", "1.5h", "-1h", "7 d", "7w"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
