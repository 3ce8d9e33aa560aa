#!/usr/bin/env bash
# Build the container image (run by `make image`, which sets the variables below).
#
#   IMAGE             name:tag to build, e.g. tenantplane/tenantplane:1.2.3
#   BASE              base image: a distroless static image, or scratch
#   VERSION COMMIT DATE   stamped into the binary and the image labels
#   CONTAINER_ENGINE  the build command's program, e.g. "podman --runtime runc";
#                     empty: podman when installed, else docker
#   IMAGE_BUILD_FLAGS more flags for the build command, e.g. --layers=false
#   GO                the go command
#
# The binary is compiled on the host (static, CGO_ENABLED=0) and copied in with the
# host's CA bundle and a minimal /etc/passwd, so nothing is pulled but the base image,
# and nothing at all with BASE=scratch. The last line of stdout is the image name.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
prog=$(basename "$0")
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"

: "${IMAGE:?set IMAGE (run through make image)}" "${BASE:?set BASE}" "${VERSION:?set VERSION}"
: "${COMMIT:=unknown}" "${DATE:=unknown}" "${GO:=go}"

engine=()
if [[ -n ${CONTAINER_ENGINE:-} ]]; then
	read -ra engine <<<"$CONTAINER_ENGINE"
elif command -v podman >/dev/null 2>&1; then
	engine=(podman)
elif command -v docker >/dev/null 2>&1; then
	engine=(docker)
else
	die "neither podman nor docker is installed (Debian: apt-get install podman runc)"
fi

ca=
for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
	if [[ -s $f ]]; then
		ca=$f
		break
	fi
done
[[ -n $ca ]] || die "no CA certificate bundle on this machine (Debian: apt-get install ca-certificates)"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/tenantplane-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"

(
	cd "$here/.."
	CGO_ENABLED=0 GOOS=linux "$GO" build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE" \
		-o "$root/usr/local/bin/tenantplane" ./cmd/tenantplane
)
cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
# The same ids as distroless's nonroot user, so either base runs as 65532.
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$root/etc/group"
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
chmod -R a+rX "$root"

info "building $IMAGE from $BASE with ${engine[*]}"
read -ra flags <<<"${IMAGE_BUILD_FLAGS:-}"
"${engine[@]}" build -f "$here/../Containerfile" "${flags[@]}" \
	--build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" --build-arg "COMMIT=$COMMIT" --build-arg "DATE=$DATE" \
	-t "$IMAGE" "$ctx" >&2
echo "$IMAGE"
