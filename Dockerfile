# Switchyard in a container: a release build, then a small Debian image with just the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY templates templates
COPY static static
RUN cargo build --release --locked && cp target/release/switchyard /switchyard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /switchyard /usr/local/bin/switchyard
ENV SWITCHYARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER nobody
ENTRYPOINT ["switchyard"]
CMD ["serve"]
