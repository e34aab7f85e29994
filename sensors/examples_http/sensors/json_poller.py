"""Emits the items of a JSON endpoint that it has not emitted before.

The endpoint answers {"items": [{"id": 1, ...}, ...]} or a bare list of such items. The highest
id emitted so far is kept in the state store under `cursor`, so a restart does not repeat items.
"""

from attune_sensor import http, log, state

# At most this many items per poll, oldest first; the rest follow on the next polls. Matches the
# manifest's max_events_per_poll, so a burst of items is delayed rather than rejected.
MAX_ITEMS = 100


def poll(config):
    url = config["url"]
    response = http.get(url)
    if response.status != 200:
        raise RuntimeError(f"GET {url} answered HTTP {response.status}, expected 200")
    document = response.json()
    items = document["items"] if isinstance(document, dict) else document

    cursor = state.get_json("cursor")
    new = sorted((item for item in items if cursor is None or item["id"] > cursor), key=lambda item: item["id"])
    new = new[:MAX_ITEMS]
    for item in new:
        yield {"id": item["id"], "item": item, "source": url}
    if new:
        state.set_json("cursor", new[-1]["id"])
    log.info(f"{len(new)} new item(s) from {url}")
