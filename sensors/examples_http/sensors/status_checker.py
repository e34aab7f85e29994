"""Checks one URL per rule and reports its HTTP status to that rule alone.

Each rule on the trigger `examples_http.http_status` names a URL in its trigger_params (`url`, and
optionally `expect_status`, default 200). Every poll GETs each rule's URL and emits one payload,
for that rule only: {"url", "status", "ok", "expect_status", "elapsed_ms"}. A URL that gives no
response (connection refused, timeout, host not in capabilities.http, body over the host's cap)
is reported as status 0, ok false, with the reason in "error": an unreachable URL is what its
rule wants to hear about, and it must not stop the checks of the other rules.

Checks run one after another, each waiting at most config["timeout_ms"], and a poll starts no
check that could end after config["budget_ms"]. The rules left over go first on the next poll, so
a few dead hosts delay the other checks but never starve them.
"""

from attune_sensor import clock, http, instances, log, state

# At most this many checks (and so payloads) per poll; matches the manifest's max_events_per_poll.
MAX_CHECKS = 100


def poll(config):
    timeout_ms = config.get("timeout_ms", 1000)
    budget_ms = config.get("budget_ms", 4000)
    started = clock.now_ms()
    todo = _resumed(instances.list())
    for done, instance in enumerate(todo):
        # The first check always runs, so that even a budget_ms below timeout_ms makes progress.
        if done == MAX_CHECKS or (done and clock.now_ms() - started + timeout_ms > budget_ms):
            log.warning(f"checked {done} of {len(todo)} URLs this poll; {instance.rule} and the rest go first next poll")
            state.set("resume_at", instance.rule)
            return
        url = instance.params.get("url")
        if not isinstance(url, str):
            # The host checks trigger_params against the param_schema; this guards one bad rule
            # from failing the poll for all the others.
            log.error(f"rule {instance.rule}: trigger_params.url must be a URL string, not {url!r}")
            continue
        # The param_schema's default; the host passes trigger_params as the rule saved them.
        expect_status = instance.params.get("expect_status", 200)
        yield instance.emit(_check(url, expect_status, timeout_ms))
    state.delete("resume_at")


def _resumed(current):
    """``current`` (sorted by rule ref) starting where the last poll stopped, if it stopped early."""
    resume_at = state.get("resume_at")
    if resume_at is None:
        return current
    # That rule may be gone since: start at the first rule not before it.
    split = next((n for n, instance in enumerate(current) if instance.rule >= resume_at), len(current))
    return current[split:] + current[:split]


def _check(url, expect_status, timeout_ms):
    started = clock.now_ms()
    try:
        status, error = http.get(url, timeout_ms=timeout_ms).status, None
    except http.HttpError as exc:
        status, error = 0, str(exc)
    result = {
        "url": url,
        "status": status,
        "ok": status == expect_status,
        "expect_status": expect_status,
        # Wall-clock time, which can step back; the payload_schema wants a count.
        "elapsed_ms": max(0, clock.now_ms() - started),
    }
    if error is not None:
        result["error"] = error
    return result
