FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md feeds.yaml ./
COPY monitor ./monitor
RUN pip install --no-cache-dir .
ENV MONITOR_FEEDS_FILE=/app/feeds.yaml
# Migrations are applied at start (MONITOR_AUTO_UPGRADE defaults to true), then the daemon runs.
CMD ["sh", "-c", "monitor db upgrade && monitor run"]
