"""A CI-sized run of the HTTP mutation fuzzer (benches/http_fuzz.py): 2,000 mutated requests
over raw sockets against the debug gateway, its own Redis and a checking upstream.

Fixed seed, so every run sends the same requests: a failure here is a regression, not bad luck.
The full run (10^5 requests, release build) is `bash benches/fuzz.sh`.
"""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("http_fuzz", ROOT / "benches" / "http_fuzz.py")
http_fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(http_fuzz)

REQUESTS = 2000


def test_mutated_requests_never_get_a_5xx_a_panic_or_past_the_gateway(gateway_binary, tmp_path):
    result = http_fuzz.run(gateway_binary, requests=REQUESTS, seed=http_fuzz.DEFAULT_SEED,
                           concurrency=16, workdir=tmp_path)
    report = result.report()
    print(report)
    assert result.passed, report
    assert sum(result.statuses.values()) == REQUESTS
    # The seeds still do their job after mutation: some requests reach the app signed in,
    # some are refused by the gateway.
    assert result.upstream["authenticated"] > 0, report
    assert result.statuses[400] > 0 and result.statuses[200] > 0, report
