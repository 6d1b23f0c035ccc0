"""The local stack's planning and generated configs (no services started)."""

from __future__ import annotations

import configparser
import socket
from pathlib import Path

import pytest

from smap_bench import stack
from smap_bench.config import Settings
from smap_bench.stage import STAGE_METRICS_PORTS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(run_dir=tmp_path / "run", workers=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_port_held_by_something_else_is_one_clear_error(settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        busy = settings.model_copy(update={"victoria_url": f"http://127.0.0.1:{port}"})
        with pytest.raises(stack.StackError) as error:
            stack.plan(busy, managed_now=[], pipeline=False)
    message = str(error.value)
    assert f"port {port} (victoria-metrics) is busy" in message
    assert "\n" not in message


def test_a_free_port_is_started_by_us_and_our_programs_stay_ours(settings: Settings) -> None:
    free = settings.model_copy(update={"nginx_port": free_port()})
    decisions = {d.service.name: d.managed for d in stack.plan(free, [], pipeline=False)}
    assert decisions["nginx"] is True
    # a service our supervisord already runs is never taken for a foreign one
    again = {d.service.name: d.managed for d in stack.plan(free, ["nginx"], pipeline=False)}
    assert again["nginx"] is True


def test_pipeline_has_one_worker_per_configured_process(settings: Settings) -> None:
    names = [s.name for s in stack.services(settings, pipeline=True, replay=True)]
    assert names[-1] == "simulator"
    assert [n for n in names if n.startswith("worker")] == ["worker1", "worker2"]
    assert "api" in names
    assert len(set(names)) == len(names)
    infra_only = [s.name for s in stack.services(settings, pipeline=False)]
    assert infra_only == ["postgres", "rabbitmq", "kafka", "victoria-metrics", "triton", "nginx"]


def test_supervisord_conf_parses_and_quotes(settings: Settings) -> None:
    programs = {
        "kafka": stack.Program(["/bin/broker", "--url", "tcp://127.0.0.1:9092"]),
        "odd": stack.Program(
            ["/bin/echo", "two words", "100%"], env={"A": 'x"y', "B": "50%"}, user="nobody"
        ),
    }
    text = stack.supervisord_conf(settings, programs)
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser["supervisorctl"]["serverurl"] == f"unix://{settings.run_dir}/supervisor.sock"
    assert parser["program:kafka"]["command"] == "/bin/broker --url tcp://127.0.0.1:9092"
    odd = parser["program:odd"]
    assert odd["command"] == '/bin/echo "two words" 100%%'
    assert odd["environment"] == 'A="x\\"y",B="50%%"'
    assert odd["user"] == "nobody"
    assert odd["autorestart"] == "true"


def test_nginx_conf_routes_dashboard_api_and_health(settings: Settings) -> None:
    text = stack.nginx_conf(settings)
    assert f"listen 127.0.0.1:{settings.nginx_port};" in text
    # The API behind an upstream with kept-alive connections (HTTP/1.1, no Connection: close).
    assert f"server 127.0.0.1:{settings.api_port};" in text and "keepalive 8;" in text
    assert "proxy_pass http://smap_api;" in text and 'proxy_set_header Connection "";' in text
    assert f"proxy_pass http://127.0.0.1:{settings.panel_port};" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "location = /healthz" in text
    assert f"worker_priority {settings.operator_nice};" in text  # as the API, ahead of the pipeline


def test_promscrape_lists_every_stage_the_api_and_triton(settings: Settings) -> None:
    stages = stack.pipeline_services(settings, replay=True)
    text = stack.promscrape_config(settings, stages)
    for service in stages:
        assert f"job_name: {service.name}" in text
        assert f"'127.0.0.1:{service.port}'" in text
    assert f"'127.0.0.1:{settings.triton_metrics_port}'" in text
    assert "job_name: api" in text and f"'127.0.0.1:{STAGE_METRICS_PORTS['api']}'" in text


def test_the_dashboard_runs_at_the_operators_niceness(settings: Settings) -> None:
    argv = stack.dashboard_program(settings).command
    assert argv[:3] == ["nice", "-n", str(settings.operator_nice)]
    assert argv[4] == "serve" and argv[5].endswith("apps/dashboard.py")
