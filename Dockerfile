# The web UI and its /sdapi/v1 API on a CUDA runtime base.
#
#   docker build -t sd-webui .
#   docker run --gpus all -p 127.0.0.1:7860:7860 sd-webui                        # UI + API, embedded model
#   docker run --gpus all -p 7860:7860 -v "$PWD/data/models:/data/models" sd-webui --listen --api --gradio-auth me:secret
#
# The code (and the embedded model in /app/models/embedded) lives in /app; everything a user keeps
# lives in /data (--data-dir /data), so a volume never hides the embedded model. Arguments after the
# image name replace the default flags (--listen --api). See README "Docker" and compose.yaml.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# python3 (3.12 on Ubuntu 24.04), git for extensions, tini so that `docker stop` ends the server
# at once, libglib for OpenCV. The distribution's versions are the ones the base image was tested with.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv git tini ca-certificates libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

# A non-root user that owns the virtual environment (extensions' install.py may pip install into it)
# and /data. Ubuntu 24.04 images ship a user "ubuntu" with uid 1000: ours takes that uid, which is
# most hosts' first user, so bind-mounted folders are writable.
ARG UID=1000
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
 && useradd --create-home --uid "${UID}" --shell /bin/bash webui \
 && python3 -m venv /opt/venv \
 && mkdir -p /app /data/models/Stable-diffusion /data/models/Lora /data/models/ControlNet /data/models/VAE \
             /data/outputs /data/extensions /data/config \
 && chown -R webui:webui /opt/venv /app /data

# numeric, so that runtimes (e.g. Kubernetes runAsNonRoot) can check it is not root
USER ${UID}
WORKDIR /app

# Requirements first, so a code change does not reinstall torch. PyPI's torch wheels for Linux are
# the CUDA builds (they bring their CUDA libraries; the host needs only the NVIDIA driver).
COPY --chown=webui:webui requirements.txt requirements-nodeps.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt

COPY --chown=webui:webui . .

# Models, pictures, extensions and settings survive the container. The settings file is
# /data/config/config.json: a folder volume, since Docker turns a missing single-file mount into a folder.
VOLUME ["/data/models", "/data/outputs", "/data/extensions", "/data/config"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]

ENTRYPOINT ["tini", "--", "python", "launch.py", "--data-dir", "/data", \
            "--ui-settings-file", "/data/config/config.json", "--ui-config-file", "/data/config/ui-config.json"]
CMD ["--listen", "--api"]
