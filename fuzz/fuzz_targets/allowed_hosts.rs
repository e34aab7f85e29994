//! `capabilities.http` entries: lines up to the first empty line are entries, each later line a
//! request `host port` to check. Never panics; besides: the list parses exactly when each entry
//! does, and allows a request exactly when one of its entries does.
#![no_main]

use attune_host::capabilities::AllowedHosts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (entries, probes) = text.split_once("\n\n").unwrap_or((text, ""));
    let entries: Vec<&str> = entries.split('\n').collect();

    let whole = AllowedHosts::parse(&entries);
    let each: Vec<Result<AllowedHosts, String>> = entries.iter().map(|e| AllowedHosts::parse(&[e])).collect();
    assert_eq!(whole.is_ok(), each.iter().all(Result::is_ok), "the list and its entries disagree");
    let Ok(hosts) = whole else { return };
    let _ = hosts.to_string();
    for single in each.iter().flatten() {
        let _ = single.to_string();
    }

    let mut requests: Vec<(&str, u16)> = Vec::new();
    for line in probes.split('\n') {
        let (host, port) = line.rsplit_once(' ').unwrap_or((line, "443"));
        requests.push((host, port.parse().unwrap_or(443)));
    }
    // Every entry names a request it allows (its own host, on its port).
    for entry in &entries {
        let entry = entry.trim();
        requests.push((entry, 443));
        if let Some((host, port)) = entry.rsplit_once(':') {
            requests.push((host, port.parse().unwrap_or(80)));
        }
    }
    for (host, port) in requests {
        let allowed = hosts.allows(host, port);
        assert_eq!(allowed, each.iter().flatten().any(|h| h.allows(host, port)), "`{host}`:{port}");
        assert!(!AllowedHosts::default().allows(host, port));
        if allowed {
            assert!(!hosts.is_empty());
        }
    }
});
