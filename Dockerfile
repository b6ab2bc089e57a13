FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md feeds.yaml ./
COPY monitor ./monitor
RUN pip install --no-cache-dir .
ENV MONITOR_FEEDS_FILE=/app/feeds.yaml
# Migrations first (workers starting together take turns on an advisory lock), then the daemon.
CMD ["sh", "-c", "monitor db upgrade && monitor run"]
