FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md feeds.yaml ./
COPY monitor ./monitor
# Installed as root, run as an unprivileged user: the code and feeds.yaml stay read-only to the service.
# What it writes (the SQLite file and its daemon lock when MONITOR_DATABASE_URL is left at its default,
# sqlite:///monitor.db) lands in its working directory, /data, the one place it owns.
RUN pip install --no-cache-dir . \
    && useradd --system --user-group --uid 10001 --create-home --home-dir /home/monitor \
        --shell /usr/sbin/nologin monitor \
    && install -d -o monitor -g monitor -m 0750 /data
ENV MONITOR_FEEDS_FILE=/app/feeds.yaml
WORKDIR /data
USER 10001:10001
# Migrations first (workers and upgrades starting together take turns on an advisory lock), then the daemon.
CMD ["sh", "-c", "monitor db upgrade && monitor run"]
