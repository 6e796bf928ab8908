# One image for both nodes: the pinned PEC (the partner's relay target runs this code, never
# code from the brand's bundle), the Flower daemons it pins (flwr 1.41), the `pec` CLI.
# On a build machine with internet access `pip install .` takes torch==2.13.0 from PyPI; pick the
# CPU wheel index there (`--extra-index-url https://download.pytorch.org/whl/cpu`) to keep the
# image at about 1.5 GB instead of a CUDA build.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PEC_HOME=/data
WORKDIR /opt/pec
COPY pyproject.toml README.md ./
COPY pec pec
COPY psi psi
COPY federated federated
COPY consent consent
COPY parties parties
COPY api api
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu . \
    && useradd --create-home --uid 10001 pec && mkdir -p /data && chown pec /data
USER pec
VOLUME ["/data"]
