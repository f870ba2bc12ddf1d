# xlgen image: the CLI, and (`serve`) the REST service.
#
# CPU (default):
#   docker build -t xlgen .
# CUDA: a CUDA runtime base and the matching torch wheel index:
#   docker build -t xlgen:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     --build-arg XLGEN_EXTRAS=all,gpu .
#
# Run:  docker run --rm -v $PWD/runs:/app/runs xlgen train --output-dir runs/goemotions
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# every extra with one ONNX Runtime flavour: all,cpu (onnxruntime) or all,gpu (onnxruntime-gpu; never both);
# the core alone: XLGEN_EXTRAS=cpu without all, then xlgen serve names the extra it needs
ARG XLGEN_EXTRAS=all,cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

# CUDA bases come without Python; the python image has it already.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY xlgen ./xlgen
COPY training ./training
COPY clustering ./clustering
COPY service ./service
# constraints.txt: the versions the tests ran with
RUN pip install -c constraints.txt ".[${XLGEN_EXTRAS}]"
COPY data ./data

RUN useradd --create-home xlgen && mkdir -p /app/runs && chown xlgen /app/runs
USER xlgen
# `xlgen serve` reads these; the model directory comes from a mounted volume.
ENV XLGEN_HOST=0.0.0.0 XLGEN_PORT=8000 XLGEN_WORK_DIR=/app/runs/service
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready').status != 200)"
ENTRYPOINT ["xlgen"]
# serve: docker run -p 8000:8000 -v $PWD/runs:/app/runs xlgen serve --model runs/goemotions/model --api-key $KEY --train-data data/goemotions
CMD ["--help"]
