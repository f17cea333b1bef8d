# The gateway's image (fly.toml builds it): wakegate alone, no BuildKit.
# Build where a Docker engine runs; wakegate's CI machines have none.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/wakegate ./cmd/wakegate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/wakegate /usr/bin/wakegate
ENTRYPOINT ["/usr/bin/wakegate"]
