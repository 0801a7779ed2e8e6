# The gateway in one container: gunicorn with gevent workers, its data in the /data volume.
#   docker build -t gateway .
#   docker run -p 127.0.0.1:8080:8080 -v gateway-data:/data gateway
# The first start prints the admin password and a demo key to the log, once.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so a bind-mounted /data can be given to it on the host (chown 10001).
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --create-home --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0750 /data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY templates ./templates
COPY static ./static
RUN pip install . && cd / && rm -rf /src

# HOST=0.0.0.0: inside a container the port is only reachable where it is published.
ENV GATEWAY_INSTANCE_PATH=/data \
    HOST=0.0.0.0 \
    PORT=8080
VOLUME /data
WORKDIR /data
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]
# SIGTERM lets in-flight streams finish (gunicorn's graceful_timeout, 30 s): stop with a longer grace.
CMD ["gateway", "serve"]
