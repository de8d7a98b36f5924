# loopml in a container: a multi-stage build that ships one stripped binary, ONNX Runtime's
# shared library and CA certificates on a slim Debian base, run as a non-root user.
#   docker build -t loopml .
#   docker run -p 5000:5000 -v loopml-data:/var/lib/loopml loopml
# The Kubernetes manifests (deploy/kubernetes) use this image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY scripts ./scripts
# Users get a stripped binary; the debug info stays in the build stage.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin loopml \
    && mkdir -p /out \
    && cp target/release/loopml /out/loopml \
    && cp "$(scripts/setup-ort.sh)" /out/libonnxruntime.so

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/loopml --create-home loopml
COPY --from=build /out/loopml /usr/local/bin/loopml
COPY --from=build /out/libonnxruntime.so /usr/local/lib/loopml/libonnxruntime.so
ENV LOOPML_ORT_LIB=/usr/local/lib/loopml/libonnxruntime.so \
    LOOPML_HOST=0.0.0.0 \
    LOOPML_DATA_DIR=/var/lib/loopml
USER 10001:10001
WORKDIR /var/lib/loopml
VOLUME ["/var/lib/loopml"]
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/loopml"]
CMD ["server", "--port", "5000"]
