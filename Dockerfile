# Production image for every Account Health process (ingest, scorer, api, migrate).
# Multi-stage: dependencies are built into a virtualenv in the first stage, and only that
# virtualenv and the code are copied into a slim runtime that runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt README.md ./
COPY healthscore ./healthscore
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app healthscore
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEALTHSCORE_ENVIRONMENT=production \
    HEALTHSCORE_LOG__FORMAT=json
USER healthscore
WORKDIR /app
EXPOSE 8000 9101 9102
ENTRYPOINT ["healthscore"]
CMD ["--help"]
