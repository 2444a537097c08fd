"""Fetch a `conductor-writer serve` /metrics page and parse it with
prometheus_client's own text parser; print every sample as JSON.

    metrics_check.py URL USER PASSWORD

Output: {"families": {NAME: TYPE}, "samples": [[NAME, {LABELS}, VALUE], ...]}.
The parser raises on any line that is not valid exposition text.
"""

import base64
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main(url, user, password):
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=20) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    families, samples = {}, []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples.append([sample.name, sample.labels, sample.value])
    print(json.dumps({"content_type": content_type, "families": families, "samples": samples}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
