# Container image of the sidecar.
#
# Stage 1 builds the wheel and installs it with its dependencies into a
# virtual environment at /opt/venv. Stage 2 copies only that environment onto
# a fresh slim base, so no build tool, source tree or pip cache reaches the
# final image. Both stages use the same base, because a virtual environment
# refers to its interpreter by absolute path.
#
# Pin the base by digest for reproducible builds, for example
#   docker build --build-arg PYTHON_IMAGE=python:3.12-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN python -m build --wheel --outdir /dist .

# --without-pip leaves pip out of the runtime environment; the pip of the
# build stage installs into it instead. pip compiles the bytecode here, since
# the read-only root filesystem keeps Python from writing it at run time.
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir /dist/*.whl

FROM ${PYTHON_IMAGE}

# A fixed numeric UID and GID, so that the task definition, the volume and the
# application container can refer to them. The application reads the token
# file through this group.
ARG SIDECAR_UID=10001
ARG SIDECAR_GID=10001

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid "${SIDECAR_GID}" sidecar \
    && useradd --system --uid "${SIDECAR_UID}" --gid "${SIDECAR_GID}" \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sidecar \
    && mkdir -p /run/sidecar \
    && chown "${SIDECAR_UID}:${SIDECAR_GID}" /run/sidecar \
    && chmod 0750 /run/sidecar

COPY --from=build /opt/venv /opt/venv

# The token volume. ECS copies this directory, with its owner and mode, into
# an empty bind-mount volume whose containerPath is the same path, so the
# sidecar can create the token file there although the root filesystem is
# read-only. This is the only path that the sidecar writes.
VOLUME ["/run/sidecar"]

USER ${SIDECAR_UID}:${SIDECAR_GID}

# Only the metrics listener. The keys listener stays on 127.0.0.1:8910 inside
# the task and is never published.
EXPOSE 9910

STOPSIGNAL SIGTERM

# ECS ignores an image health check and runs the one in the task definition;
# this one serves `docker run` and other engines.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sidecar", "healthcheck"]

ENTRYPOINT ["sidecar"]
