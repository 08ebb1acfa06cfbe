# Sourced by deploy/container-test.sh: podman set up the way it runs on a Debian 12 host without
# systemd or an image registry, without touching the system's configuration.
#   - runc as the runtime, vfs storage, netavark networks with DNS, raised default ulimits
#     (files in $cache/podman/);
#   - a Debian 12 base image made with debootstrap against the mirror apt already uses, imported
#     as localhost/debian:12 and localhost/debian:12-slim, cached as a tarball and reused.
# Needs root (debootstrap, podman's rootful storage). Installs podman, runc, debootstrap and
# podman-compose with apt when they are missing: these belong to this script, not to the build.

container_cache="${REGTOPK_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/regtopk-containers}"
mkdir -p "$container_cache/podman"

container_install_tools() {
  local missing=()
  for p in podman runc netavark aardvark-dns debootstrap podman-compose docker-compose; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "container-env: installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

container_configure_podman() {
  cat > "$container_cache/podman/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
[network]
# netavark with aardvark-dns: containers of a compose job find each other by service name.
network_backend = "netavark"
CONF
  cat > "$container_cache/podman/storage.conf" <<CONF
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
  export CONTAINERS_CONF="$container_cache/podman/containers.conf"
  export CONTAINERS_STORAGE_CONF="$container_cache/podman/storage.conf"
}

# The mirror apt uses (deb822 sources first, then the one-line format).
container_debian_mirror() {
  local m
  m="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)"
  if [ -z "$m" ]; then
    m="$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)"
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

container_base_image() {
  if podman image exists localhost/debian:12 && podman image exists localhost/debian:12-slim; then
    return 0
  fi
  # The name changes with the recipe, so that a changed recipe is rebuilt.
  local tarball="$container_cache/debian12-minbase-slim3.tar"
  if [ ! -s "$tarball" ]; then
    local root mirror
    root="$(mktemp -d)"
    mirror="$(container_debian_mirror)"
    echo "container-env: debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$container_cache/debootstrap.log" 2>&1 \
      || { echo "debootstrap failed: see $container_cache/debootstrap.log"; rm -rf "$root"; return 1; }
    # What a slim image leaves out, now and in every package installed later (the same dpkg
    # filter as Docker's debian:12-slim): documentation but the copyright files, man pages,
    # translations; and apt's package cache and lists.
    cat > "$root/etc/dpkg/dpkg.cfg.d/regtopk-slim" <<SLIM
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
SLIM
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
           "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
    # Images get their sources from the same mirror as this host.
    echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
    # mktemp made the root 0700: as the image's / it would lock every non-root user out.
    chmod 755 "$root"
    tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$root"
  fi
  # The configuration Docker's debian:12 image carries (a bare import has no PATH at all).
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tarball" localhost/debian:12 >/dev/null
  podman tag localhost/debian:12 localhost/debian:12-slim
}
