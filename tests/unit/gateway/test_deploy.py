"""The deployment files: systemd units are valid and hardened; the compose file, its Dockerfile
and configs fit together; the Raspberry Pi install script is valid bash that refuses to run
without root and, with --dry-run, only says what it would do. (deploy/mosquitto is checked
against a real broker in tests/integration/edge/test_mosquitto_conf.py.)"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

from cairn_gateway.config import load_config, parse_config
from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[3]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
             "PrivateTmp": "yes"}
#: What each unit runs (after /opt/cairn/bin/), and whether it has a data directory to write.
COMMANDS = {"cairn-edge.service": ("cairn-edge run", True),
            "cairn-gateway.service": ("cairn gateway run", True),
            "cairn-dht-bootstrap.service": ("cairn dht bootstrap", False)}


def read_unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


def test_there_are_units() -> None:
    assert {u.name for u in UNITS} == set(COMMANDS)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened_and_run_as_their_own_user(unit: Path) -> None:
    service = read_unit(unit)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{unit.name}: {key}"
    assert service.get("User") and service.get("User") != "root"
    assert service.get("Group") == service.get("User")
    command, writes = COMMANDS[unit.name]
    assert service["ExecStart"].startswith(f"/opt/cairn/bin/{command} ")
    if writes:
        assert service.get("ReadWritePaths"), "a writable data directory, nothing else"
        # a bounded number of open files, above what the gateway's API may hold by default
        assert int(service["LimitNOFILE"]) >= 4 * parse_config("", ROOT).api_max_connections
    else:
        assert "ReadWritePaths" not in service, f"{unit.name} writes nothing"


def test_the_bootstrap_unit_uses_only_options_the_command_has() -> None:
    from click.testing import CliRunner

    from cairn.cli import main

    service = read_unit(ROOT / "deploy" / "systemd" / "cairn-dht-bootstrap.service")["Service"]
    argv = shlex.split(service["ExecStart"])[1:]
    assert argv[:2] == ["dht", "bootstrap"]
    options = [a for a in argv if a.startswith("--")]
    assert options == ["--host", "--port", "--address"]
    helptext = CliRunner().invoke(main, ["dht", "bootstrap", "--help"]).output
    assert all(o in helptext for o in options)
    # listening on every interface needs the address others reach it at, from the env file
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--address") + 1] == "${CAIRN_DHT_ADDRESS}"
    assert service["EnvironmentFile"] == "/etc/cairn/dht-bootstrap.env"
    assert "CAIRN_DHT_ADDRESS=" in (ROOT / "deploy" / "systemd" /
                                    "cairn-dht-bootstrap.service").read_text()


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze", "apt-get install systemd (make test does)")
    bindir = Path(sys.executable).parent
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/cairn/bin", str(bindir)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- compose -----------------------------------------------------------------------------------

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the service's bind mounts (short syntax: a path source)."""
    out = []
    for v in service.get("volumes", []):
        assert isinstance(v, str), "short syntax only"
        source, target = v.split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def test_compose_has_the_four_services_and_declares_its_volumes() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"gateway", "grafana", "prometheus", "mosquitto"}
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
             if not v.startswith((".", "/"))}
    assert named == set(doc["volumes"]), "every named volume is declared, and only those"


def test_every_local_file_compose_references_exists() -> None:
    services = compose()["services"]
    mounts = [(name, src, dst) for name, s in services.items() for src, dst in bind_mounts(s)]
    assert len(mounts) == 8
    for name, source, target in mounts:
        path = (COMPOSE_DIR / source).resolve()
        assert path.exists(), f"{name}: {source} (for {target}) does not exist"
    build = services["gateway"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    entry = services["mosquitto"]["entrypoint"]
    assert any(dst == entry[-1] for _, dst in bind_mounts(services["mosquitto"]))


def test_the_gateway_image_installs_the_repository_with_the_gateway_extra() -> None:
    dockerfile = (ROOT / compose()["services"]["gateway"]["build"]["dockerfile"]).read_text()
    copies = re.findall(r"^COPY (.+)$", dockerfile, flags=re.MULTILINE)
    for line in copies:
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    # every package pyproject.toml names is copied into the image
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"]
                    .values()}
    copied = {src for line in copies for src in line.split()[:-1]}
    assert package_dirs <= copied
    assert "pip install --no-cache-dir '.[gateway]'" in dockerfile
    assert 'CMD ["cairn", "gateway", "run", "--config", "/etc/cairn/gateway.toml"]' in dockerfile
    assert re.search(r"^USER cairn-gateway$", dockerfile, flags=re.MULTILINE)


def test_the_gateway_config_in_compose_is_valid_and_listens_where_grafana_looks() -> None:
    gateway = compose()["services"]["gateway"]
    (source,) = [s for s, d in bind_mounts(gateway) if d == "/etc/cairn/gateway.toml"]
    cfg = load_config(COMPOSE_DIR / source)
    assert cfg.api == ("0.0.0.0", 8080)
    assert str(cfg.key_file).startswith("/var/lib/cairn-gateway/")
    assert str(cfg.data_dir).startswith("/var/lib/cairn-gateway/")
    assert any(v.endswith(":/var/lib/cairn-gateway") for v in gateway["volumes"])
    # the API needs its read token off loopback; published on the host's loopback only all the same
    assert gateway["ports"] == ["127.0.0.1:8080:8080"]


def test_grafana_has_the_infinity_plugin_and_cairns_provisioning() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    assert "yesoreyeram-infinity-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert grafana["image"].rsplit(":", 1)[1][0].isdigit(), "Grafana's image is pinned"
    mounts = {d: s for s, d in bind_mounts(grafana)}
    provisioning = (COMPOSE_DIR / mounts["/etc/grafana/provisioning"]).resolve()
    assert provisioning == (ROOT / "deploy" / "grafana" / "provisioning").resolve()
    dashboards = yaml.safe_load((provisioning / "dashboards" / "cairn.yaml").read_text())
    (path,) = [p["options"]["path"] for p in dashboards["providers"]]
    assert path in mounts, "the dashboards are mounted where the provider reads them"
    assert list((COMPOSE_DIR / mounts[path]).glob("*.json"))
    assert "3000:3000" in grafana["ports"]


def test_the_infinity_plugin_is_pinned_and_the_docs_name_its_version() -> None:
    """An unpinned plugin installs whatever is newest at the next start, which may read the
    dashboards differently: compose pins one version and the docs install the same."""
    plugins = compose()["services"]["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    [infinity] = [p.split() for p in plugins.split(",") if "infinity" in p]
    assert len(infinity) == 2 and re.fullmatch(r"\d+\.\d+\.\d+", infinity[1]), plugins
    pinned = " ".join(infinity)
    for doc in ("docs/gateway.md", "docs/deploy.md"):
        text = " ".join((ROOT / doc).read_text().split())
        assert pinned in text, f"{doc} does not name {pinned}"
        for install in re.finditer(r"(?:plugins install|GF_INSTALL_PLUGINS=) ?"
                                   r"yesoreyeram-infinity-datasource[^`]*", text):
            assert install.group(0).endswith(pinned), (doc, install.group(0))


def test_the_data_source_urls_are_compose_services_on_their_ports() -> None:
    services = compose()["services"]
    gateway_port = load_config(COMPOSE_DIR / "gateway.toml").api[1]
    listens = {"gateway": gateway_port, "prometheus": 9090}
    sources = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" /
                              "cairn.yaml").read_text())["datasources"]
    assert len(sources) == 2
    for source in sources:
        url = urlsplit(source["url"])
        assert url.hostname in services, f"{source['name']}: {url.hostname} is not a service"
        assert url.port == listens[url.hostname]
    assert any(p.endswith(":9090") for p in services["prometheus"]["ports"])


def test_prometheus_scrapes_the_gateways_metrics() -> None:
    prometheus = compose()["services"]["prometheus"]
    (source,) = [s for s, d in bind_mounts(prometheus) if d == "/etc/prometheus/prometheus.yml"]
    doc = yaml.safe_load((COMPOSE_DIR / source).read_text())
    (job,) = doc["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    gateway_port = load_config(COMPOSE_DIR / "gateway.toml").api[1]
    assert job["static_configs"][0]["targets"] == [f"gateway:{gateway_port}"]


def test_mosquitto_in_compose_runs_the_deploy_config() -> None:
    mosquitto = compose()["services"]["mosquitto"]
    mounts = {d: s for s, d in bind_mounts(mosquitto)}
    conf = (COMPOSE_DIR / mounts["/etc/mosquitto/mosquitto.conf"]).resolve()
    assert conf == ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
    text = conf.read_text()
    for path in re.findall(r"^(?:password_file|acl_file|persistence_location) (\S+)$", text,
                           flags=re.MULTILINE):
        # each path the config names is inside a mount of the container
        assert any(path.startswith(v.split(":")[1]) for v in mosquitto["volumes"]), path
    assert mosquitto["command"] == ["mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
    assert "1883:1883" in mosquitto["ports"]


@pytest.mark.parametrize("script", ["gateway-entrypoint.sh", "mosquitto-entrypoint.sh"])
def test_the_entrypoints_are_valid_sh(script: str) -> None:
    path = COMPOSE_DIR / script
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert 'exec "$@"' in path.read_text()
    shellcheck_ok(path)


# -- the Raspberry Pi install script -----------------------------------------------------------

INSTALL = ROOT / "deploy" / "pi" / "install.sh"


def shellcheck_ok(path: Path) -> None:
    """shellcheck the script (a missing shellcheck fails in CI, skips elsewhere)."""
    tool = shutil.which("shellcheck")
    if tool is None:
        missing("shellcheck", "apt-get install shellcheck (make test does)")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_install_script_is_valid_bash() -> None:
    text = INSTALL.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(INSTALL, os.X_OK)
    done = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def test_install_script_passes_shellcheck() -> None:
    shellcheck_ok(INSTALL)


@pytest.fixture(scope="module")
def readable_checkout() -> Iterator[Path]:
    """The parts of the checkout install.sh reads, copied where an unprivileged user can read
    them: a clone in a private home folder (mode 0700 or 0750) is not, and nobody would get
    "Permission denied" on the script itself."""
    top = Path(tempfile.mkdtemp(prefix="cairn-install-"))
    try:
        shutil.copy2(ROOT / "pyproject.toml", top / "pyproject.toml")
        shutil.copytree(ROOT / "deploy", top / "deploy")
        shutil.copytree(ROOT / "docs", top / "docs")
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        yield top
    finally:
        shutil.rmtree(top)


def as_nobody(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run install.sh (from ``checkout``) as an unprivileged user (nobody when we are root), so
    it can change nothing whatever it tries."""
    argv = [str(checkout / INSTALL.relative_to(ROOT)), *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            missing("setpriv", "apt-get install util-linux: root drops privileges with it")
        argv = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env=env, cwd="/")


def test_install_script_refuses_to_run_without_root(readable_checkout: Path) -> None:
    done = as_nobody(readable_checkout, str(readable_checkout))
    assert done.returncode == 1
    assert "must run as root" in done.stderr
    assert done.stdout == "", "nothing done before the check"


def test_install_script_dry_run_says_what_it_would_do(readable_checkout: Path) -> None:
    done = as_nobody(readable_checkout, "--dry-run", "--with-mosquitto", str(readable_checkout))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dry run: nothing is changed" in out
    would = [line for line in out.splitlines() if line.startswith("would run:")]
    assert would, out
    text = "\n".join(would)
    for expected in ["/opt/cairn/bin/pip install --upgrade --no-cache-dir",
                     "\\[edge\\]", "systemctl enable cairn-edge.service",
                     "/etc/systemd/system/cairn-edge.service",
                     "/etc/mosquitto/mosquitto.conf", "/etc/mosquitto/acl",
                     "install -d -o mosquitto -g mosquitto -m 0750 /var/lib/mosquitto",
                     "systemctl restart mosquitto.service"]:
        assert expected in text, expected
    # what already exists is skipped, what does not is done (or would be): user, venv, init
    assert ("user cairn-edge: present" in out) or ("would run: useradd --system" in text)
    assert ("venv /opt/cairn: present" in out) or ("-m venv /opt/cairn" in text)
    assert ("edge.toml: present" in out) or ("cairn-edge init /var/lib/cairn-edge" in text)
    for advice in ["noatime", "log2ram", "Storage=volatile", "SystemMaxUse"]:
        assert advice in out, advice


@pytest.mark.parametrize(("args", "message"), [
    ((), "give SOURCE"),
    (("--dry-run", "/nonexistent/cairn"), "neither a Cairn checkout nor a .whl"),
    (("--dry-run", "--frobnicate", "."), "unknown option --frobnicate"),
])
def test_install_script_says_what_is_wrong_with_its_arguments(args: tuple[str, ...],
                                                              message: str,
                                                              readable_checkout: Path) -> None:
    done = as_nobody(readable_checkout, *args)
    assert done.returncode == 1
    assert message in done.stderr


def test_compose_gives_the_read_token_to_the_gateway_grafana_and_prometheus() -> None:
    services = compose()["services"]
    cfg = load_config(COMPOSE_DIR / "gateway.toml")
    assert cfg.api_read_token_file is not None and cfg.api_admin_token_file is not None
    assert str(cfg.api_read_token_file).startswith("/var/lib/cairn-gateway/")
    for name in ("gateway", "grafana", "prometheus"):
        value = services[name]["environment"]["CAIRN_API_READ_TOKEN"]
        assert value.startswith("${CAIRN_API_READ_TOKEN:?"), name  # required, from .env
    entrypoint = (COMPOSE_DIR / "gateway-entrypoint.sh").read_text()
    assert f'> "$DIR/{cfg.api_read_token_file.name}"' in entrypoint
    assert "umask 077" in entrypoint
    (job,) = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())["scrape_configs"]
    credentials = job["authorization"]["credentials_file"]
    assert credentials in " ".join(services["prometheus"]["entrypoint"])
    sources = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" /
                              "cairn.yaml").read_text())["datasources"]
    (gw,) = [s for s in sources if s["uid"] == "cairn-gateway"]
    assert gw["jsonData"]["httpHeaderName1"] == "Authorization"
    assert gw["secureJsonData"]["httpHeaderValue1"] == "Bearer ${CAIRN_API_READ_TOKEN}"
