# otpservice: a slim, non-root image. Build: docker build -t otpservice .
# The install steps live in docker/install-service, which tests/test_image.py also runs (as a
# non-root user, from a read-only copy of the code): there is no container engine in CI.
ARG PYTHON_VERSION=3.11.14
ARG UV_VERSION=0.9.5

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
COPY docker/install-service /usr/local/bin/install-service
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY otpservice ./otpservice
# The uv workspace's other member (uv.lock covers it); the image does not install it.
COPY client ./client
ENV UV_CACHE_DIR=/tmp/uv-cache
RUN install-service /src /opt/otpservice /usr/local/bin/python3

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="otpservice" \
      org.opencontainers.image.description="Self-hosted SMS one-time-code service on Redis" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/otpservice/otpservice"
COPY --from=build /opt/otpservice /opt/otpservice
# Nothing is written at run time: the root filesystem can be read-only. Python caches no
# bytecode (it was compiled at install), and /metrics with several workers needs
# PROMETHEUS_MULTIPROC_DIR on a writable volume (an emptyDir).
ENV PATH=/opt/otpservice/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric UID and GID, so runAsNonRoot can verify it without a passwd entry.
USER 10001:10001
EXPOSE 8080 8081
# Exec form: the service is PID 1's only process and gets SIGTERM directly.
ENTRYPOINT ["/opt/otpservice/bin/otpservice", "serve"]
CMD ["--config", "/etc/otpservice/otpservice.toml"]
