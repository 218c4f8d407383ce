# The Cairn gateway: the repository pip-installed with the gateway extra, run as its own user.
# Built by compose.yaml with the repository's root as the context (Cairn is not on PyPI):
#   docker build -f deploy/compose/gateway.Dockerfile -t cairn-gateway .
FROM python:3.12-slim-bookworm

# the package's sources: every import package (one distribution), the metadata, the README
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY edge edge
COPY gateway gateway
COPY firmware-sim firmware-sim
COPY demo demo
RUN pip install --no-cache-dir '.[gateway]' && rm -rf /src

RUN useradd --system --home-dir /var/lib/cairn-gateway --create-home --shell /usr/sbin/nologin \
        cairn-gateway \
    && chmod 0700 /var/lib/cairn-gateway
COPY deploy/compose/gateway-entrypoint.sh /usr/local/bin/cairn-gateway-entrypoint
RUN chmod 0755 /usr/local/bin/cairn-gateway-entrypoint

USER cairn-gateway
WORKDIR /var/lib/cairn-gateway
VOLUME /var/lib/cairn-gateway
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cairn-gateway-entrypoint"]
CMD ["cairn", "gateway", "run", "--config", "/etc/cairn/gateway.toml"]
