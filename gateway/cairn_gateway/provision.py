"""What ``cairn gateway grafana push`` installs in a running Grafana: data sources and
dashboards, read from the files that also provision Grafana at start (``grafana/`` in this
package, linked as ``deploy/grafana``).

Two sets, one per kind of data source:

- ``infinity`` (the default): the Infinity plugin on the gateway's JSON API and Prometheus on
  its ``/metrics`` (``provisioning/``, ``dashboards/``);
- ``postgres``: Grafana's built-in PostgreSQL data source on the shared store, no plugin
  (``provisioning-postgres/``, ``dashboards-postgres/``): for a fleet whose gateways share one
  PostgreSQL database, Grafana reads it directly.

The PostgreSQL data source is made from a store URL (``postgresql://user@host:port/db``, the
server as Grafana reaches it; ``?sslmode=`` is kept, ``require`` otherwise) and a password read
from a file (mode 0600) or the environment: a password is never taken from the command line
(every user of the machine sees it in ``ps``) nor from the gateway's own URL (the gateway's
role may write; Grafana's should only read). Every secret is registered with
:func:`cairn.logs.add_secret`, so no output shows it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml  # type: ignore[import-untyped]

from cairn.errors import UsageError
from cairn.fleet.identity import read_secret
from cairn.logs import add_secret

__all__ = ["FILES", "PASSWORD_ENV", "SSLMODES", "ProvisionError", "dashboards",
           "infinity_sources", "postgres_source", "store_url_of_config", "upsert_source"]

#: the provisioning files and dashboards shipped in the package
FILES = Path(__file__).with_name("grafana")
#: where the PostgreSQL data source's password may come from instead of a file
PASSWORD_ENV = "CAIRN_GRAFANA_DB_PASSWORD"  # noqa: S105 (a variable's name)
#: the sslmode values Grafana's PostgreSQL data source accepts
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
_DASHBOARDS = {"infinity": "dashboards", "postgres": "dashboards-postgres"}


class ProvisionError(UsageError, ValueError):
    """A store URL, password file or config given to ``grafana push`` is wrong: says which."""


def _sources(relative: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((FILES / relative).read_text())
    return list(doc["datasources"])


def infinity_sources(gateway_url: str | None, prometheus_url: str | None,
                     read_token: str | None) -> list[dict[str, Any]]:
    """The Infinity and Prometheus data sources, URLs overridden when given; the gateway's read
    token as the Infinity source's bearer header when given (else Grafana keeps its own)."""
    urls = {"yesoreyeram-infinity-datasource": gateway_url, "prometheus": prometheus_url}
    out = []
    for ds in _sources("provisioning/datasources/cairn.yaml"):
        body = {k: v for k, v in ds.items() if k not in ("editable", "secureJsonData")}
        if "secureJsonData" in ds and read_token is not None:  # never the ${...} itself
            body["secureJsonData"] = {"httpHeaderValue1": f"Bearer {read_token}"}
        if urls.get(ds["type"]):
            body["url"] = urls[ds["type"]]
            if "allowedHosts" in body.get("jsonData", {}):
                body["jsonData"] = {**body["jsonData"], "allowedHosts": [body["url"]]}
        out.append(body)
    return out


def _parse_store_url(url: str, *, from_config: bool) -> tuple[str, str | None, str, str]:
    """(host:port, user, database, sslmode) of a store URL. A password in it is refused
    unless it comes from the config (where it is the gateway's, and left out)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as exc:
        raise ProvisionError(f"store URL: {exc}") from None
    if parts.password is not None:
        add_secret(parts.password)
        if not from_config:
            raise ProvisionError(
                "the store URL holds a password: a command line is visible to every user of "
                f"this machine; put Grafana's password in --store-password-file or ${PASSWORD_ENV}")
    if parts.scheme not in ("postgresql", "postgres"):
        raise ProvisionError(f"store URL {parts.scheme}://...: give a postgresql:// URL")
    database = parts.path.lstrip("/")
    if not parts.hostname or not database or "/" in database:
        raise ProvisionError("store URL: give postgresql://user@host:port/database "
                             "(the server as Grafana reaches it)")
    sslmode = parse_qs(parts.query).get("sslmode", ["require"])[-1]
    if sslmode not in SSLMODES:
        raise ProvisionError(f"store URL: sslmode {sslmode!r} is not one of "
                             f"{', '.join(SSLMODES)} (Grafana's)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.username, database, sslmode


def store_url_of_config(path: Path) -> str:
    """``[store] url`` of a gateway config file (read as the gateway reads it; its password
    file is the gateway's, never Grafana's)."""
    from cairn_gateway.config import ConfigError, load_config

    try:
        url = load_config(path).store_url
    except ConfigError as exc:
        raise ProvisionError(f"cannot read the gateway config {path}: {exc}") from None
    if not url:
        raise ProvisionError(f"{path} has no [store] url (the gateway stores in SQLite): give "
                             "--store-url, the PostgreSQL server as Grafana reaches it")
    return url


def postgres_source(url: str, *, from_config: bool, user: str | None,
                    password_file: Path | None) -> tuple[dict[str, Any], str]:
    """The PostgreSQL data source body for ``url`` (and the URL as shown, without password).
    The password: from ``password_file``, else ``$CAIRN_GRAFANA_DB_PASSWORD``, else none sent
    (an existing data source keeps the one Grafana holds)."""
    address, url_user, database, sslmode = _parse_store_url(url, from_config=from_config)
    [template] = _sources("provisioning-postgres/datasources/cairn-postgres.yaml")
    body = {k: v for k, v in template.items() if k not in ("editable", "secureJsonData")}
    body["url"] = address
    body["user"] = user or url_user or template["user"]
    body["jsonData"] = {**template["jsonData"], "database": database, "sslmode": sslmode}
    password = None
    if password_file is not None:
        password = read_secret(password_file, ProvisionError, "database password",
                               "write Grafana's database password in it (chmod 600)")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
        add_secret(password)
    if password is not None:
        body["secureJsonData"] = {"password": password}
    return body, f"postgresql://{body['user']}@{address}/{database}"


def dashboards(kind: str) -> Iterator[dict[str, Any]]:
    """The dashboards of ``kind`` (``infinity`` or ``postgres``), by file name."""
    for path in sorted((FILES / _DASHBOARDS[kind]).glob("*.json")):
        dash = json.loads(path.read_text())
        dash.pop("id", None)
        yield dash


def upsert_source(api: Any, body: dict[str, Any], not_found: type[Exception],
                  say: Callable[[str], None]) -> None:
    """Update the data source with the body's uid, or create it when Grafana has none
    (``not_found``: the client's error class; a 404 of it means none)."""
    try:
        api.datasource.get_datasource_by_uid(body["uid"])
    except not_found as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        api.datasource.create_datasource(body)
        say(f"created data source {body['name']} ({body['uid']})")
        return
    api.datasource.update_datasource_by_uid(body["uid"], body)
    say(f"updated data source {body['name']} ({body['uid']})")
