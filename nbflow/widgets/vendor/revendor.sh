#!/bin/sh
# Re-vendor dagre (the DAG widget's in-browser layered layout) from npm.
# Usage: sh nbflow/widgets/vendor/revendor.sh [VERSION]   (default: the version below)
# Needs npm; nothing is fetched at run time, the file is shipped with the package.
set -eu
VERSION="${1:-3.1.3}"
HERE="$(cd "$(dirname "$0")" && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "@dagrejs/dagre@$VERSION" >/dev/null && tar xzf ./*.tgz)
{
  printf '/* @dagrejs/dagre %s (MIT licence, see LICENSE.dagre.txt), dist/dagre.esm.js from npm. */\n' "$VERSION"
  grep -v '^//# sourceMappingURL=' "$TMP/package/dist/dagre.esm.js"
} > "$HERE/dagre.esm.js"
cp "$TMP/package/LICENSE" "$HERE/LICENSE.dagre.txt"
sed -i "s/^| @dagrejs\/dagre | [^|]* |/| @dagrejs\/dagre | $VERSION |/" "$HERE/README.md"
echo "vendored @dagrejs/dagre $VERSION into $HERE"
