# HSSK Gateway in a container (README: "Deployment"): a non-root user, the data dir a volume.
#   docker build -t hssk-gateway .
#   docker run -d --name hssk -p 2575:2575 -p 8080:8080 -v hssk-data:/var/lib/hssk-gateway \
#     -v /etc/hssk-gateway/gateway.toml:/etc/hssk-gateway/gateway.toml:ro hssk-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HSSK_DATA_DIR=/var/lib/hssk-gateway \
    HSSK_LOG_FORMAT=json \
    HSSK_MLLP__LISTEN="tcp:2575" \
    HSSK_HTTP__LISTEN="tcp:8080"

WORKDIR /opt/hssk-gateway/src
COPY setup.cfg pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
COPY plugins ./plugins
COPY config/gateway.toml /etc/hssk-gateway/gateway.toml
RUN python -m venv /opt/hssk-gateway/venv \
 && /opt/hssk-gateway/venv/bin/pip install --no-cache-dir . \
 && groupadd --system --gid 10001 hssk \
 && useradd --system --uid 10001 --gid hssk --home-dir /var/lib/hssk-gateway --shell /usr/sbin/nologin hssk \
 && install -d -m 0700 -o hssk -g hssk /var/lib/hssk-gateway

ENV PATH=/opt/hssk-gateway/venv/bin:$PATH
# Owned by hssk before it is declared, so a new named volume starts with that owner and mode.
VOLUME ["/var/lib/hssk-gateway"]
EXPOSE 2575 8080
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4)"]
# SIGTERM (docker stop) is a clean stop: the gateway answers what is in flight, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hssk-gateway"]
CMD ["serve", "--config", "/etc/hssk-gateway/gateway.toml"]
