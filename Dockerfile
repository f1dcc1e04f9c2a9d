# One image for every Switchboard service; docker-compose.yml picks the command.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY switchboard ./switchboard
COPY broker ./broker
COPY bridge ./bridge
COPY api ./api
COPY cli ./cli
COPY config ./config
RUN pip install . \
    && useradd --system --home-dir /app --shell /usr/sbin/nologin switchboard \
    && mkdir -p /app/var && chown switchboard /app/var

USER switchboard
EXPOSE 1883 8083 8000 9101 9102 9103
ENTRYPOINT ["switchboard"]
CMD ["up"]
