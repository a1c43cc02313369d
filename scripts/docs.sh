#!/usr/bin/env bash
# The combined DocC archive of the library (`make docs`), from the release build that
# `make test` already made: `swift package dump-symbol-graph` extracts the symbol graphs from the
# built modules (no compilation when the release build is current), then one `docc convert` per
# documented target in dependency order, each linking to its dependencies' archives, and
# `docc merge`: what swift-docc-plugin's --enable-experimental-combined-documentation does,
# without the plugin's own compilation of every documented module (about 3.5 min on 2 cores).
#
# A DocC warning (a broken link, an undocumented parameter) fails the build.
#
# Usage: scripts/docs.sh TARGET... (the documented targets; MobileNet carries the catalog)
# Output: .build/docs/swift-mobilenet.doccarchive
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/docs.sh TARGET..." >&2; exit 64; }

swift package -c release dump-symbol-graph --minimum-access-level public --emit-extension-block-symbols >/dev/null
graphs="$(swift build -c release --show-bin-path)/../symbolgraph"
[ -d "$graphs" ] || { echo "docs: no symbol graphs in $graphs" >&2; exit 1; }
docc="$(command -v docc || echo "$(dirname "$(command -v swift)")/docc")"
out=.build/docs
rm -rf "$out"
mkdir -p "$out/graphs" "$out/archives"

# Each documented target's documented direct dependencies, in dependency order (from Package.swift).
order="$(swift package describe --type json | python3 -c '
import json, sys
targets = {t["name"]: t for t in json.load(sys.stdin)["targets"]}
wanted = sys.argv[1:]
done, lines = set(), []
def visit(name):
    if name in done: return
    done.add(name)
    deps = [d for d in targets[name].get("target_dependencies", []) if d in wanted]
    for d in deps: visit(d)
    lines.append(" ".join([name] + deps))
for name in wanted: visit(name)
print("\n".join(lines))
' "$@")"

while read -r target deps; do
    mkdir -p "$out/graphs/$target"
    cp "$graphs/$target.symbols.json" "$out/graphs/$target/"
    for extension in "$graphs/$target@"*.symbols.json; do
        [ -e "$extension" ] && cp "$extension" "$out/graphs/$target/"
    done
    arguments=(convert)
    [ -d "Sources/$target/$target.docc" ] && arguments+=("Sources/$target/$target.docc")
    arguments+=(--fallback-display-name "$target" --fallback-bundle-identifier "$target"
                --additional-symbol-graph-dir "$out/graphs/$target" --output-path "$out/archives/$target.doccarchive"
                --enable-experimental-external-link-support --warnings-as-errors)
    for dep in $deps; do arguments+=(--dependency "$out/archives/$dep.doccarchive"); done
    "$docc" "${arguments[@]}" >"$out/$target.log" 2>&1 || { cat "$out/$target.log" >&2; echo "docs: docc convert failed for $target" >&2; exit 1; }
    echo "docs: $target"
done <<<"$order"

archives=()
while read -r target _; do archives+=("$out/archives/$target.doccarchive"); done <<<"$order"
"$docc" merge "${archives[@]}" --output-path "$out/swift-mobilenet.doccarchive" \
    --synthesized-landing-page-name swift-mobilenet --synthesized-landing-page-kind Package >"$out/merge.log" 2>&1 \
    || { cat "$out/merge.log" >&2; echo "docs: docc merge failed" >&2; exit 1; }
echo "docs: $out/swift-mobilenet.doccarchive"
