# One image for every Baton service; the command picks the service (`baton run supervisor`, ...).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY libs libs
COPY services services
COPY schemas schemas
COPY workflows workflows
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home baton
ENV BATON_SCHEMA_DIR=/app/schemas BATON_WORKFLOW_DIR=/app/workflows
USER 10001
ENTRYPOINT ["baton"]
