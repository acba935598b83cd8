# Colony agent image, built from scratch: nothing in it but the static
# binary, the CA bundle and an empty, non-root-owned /data mount point.
#
# There is no build stage on purpose: the image must build where no base
# image can be pulled. `make image` stages the build context in bin/image/
# (static CGO_ENABLED=0 binary, the host's CA bundle, an empty data/ dir)
# and runs `docker build -f Dockerfile bin/image`. The repository itself is
# never the build context: .dockerignore keeps `docker build .` from shipping
# it, and such a build fails on the COPYs below.
#
#   make image                                 # tags colony:latest
#   make image IMAGE=colony:v0.3.0             # another tag
#   make image CA_BUNDLE=/etc/pki/tls/cert.pem # CA bundle on RHEL-like hosts
#
# The data dir holds the node's identity: it is a VOLUME, never baked in.
# Every container gets its own (anonymous, named, or bind-mounted) volume, so
# every container gets its own node ID; a restarted container keeps it.
FROM scratch

# The agent runs as uid/gid 65532 (no /etc/passwd: numeric ids need none).
# It needs no privileges: ports 7946 and 7070 are above 1024. /data is owned
# by 65532 in the image, and Docker copies that ownership into a fresh named
# or anonymous volume; a bind-mounted host dir must be chowned to 65532 (or
# run the container with --user 0).
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chown=65532:65532 data/ /data/
COPY colony /colony

USER 65532:65532

# Bind all interfaces; the agent advertises the container's only private IP
# (with several NICs set COLONY_ADVERTISE, e.g. a go-sockaddr template).
ENV COLONY_DATA_DIR=/data
VOLUME ["/data"]

# Gossip (TCP and UDP) and the HTTP API.
EXPOSE 7946/tcp 7946/udp 7070/tcp
EXPOSE 7947/tcp

# Exec form: there is no shell in the image. The CLI reads COLONY_HTTP_ADDR
# like the agent does, and otherwise uses 127.0.0.1:7070, which the agent
# serves when bound to 0.0.0.0 (the default).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/colony", "info"]

ENTRYPOINT ["/colony"]
CMD ["agent"]
