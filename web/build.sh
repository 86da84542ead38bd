#!/usr/bin/env bash
# Build the browser package: the library and `web/` compiled to WebAssembly, the JavaScript
# bindings and TypeScript definitions (wasm-bindgen), and the committed MNIST sample, into
# web/www/ (served as it is by web/serve.sh).
#
# Needs: the Rust target wasm32-unknown-unknown (rustup) and the wasm-bindgen CLI at the
# version web/Cargo.toml pins (cargo install wasm-bindgen-cli --version 0.2.130); this script
# installs either when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
WB_VERSION=0.2.130

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "build.sh: adding the Rust target wasm32-unknown-unknown" >&2
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WB_VERSION" ]; then
  echo "build.sh: installing wasm-bindgen-cli $WB_VERSION (a few minutes, once)" >&2
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

target="${CARGO_TARGET_DIR:-target}"
cargo build -p wgtrain-web --release --target wasm32-unknown-unknown
# Into a fresh folder, then swapped in: a page being served keeps a whole package.
rm -rf web/www/pkg.new
wasm-bindgen --target web --out-dir web/www/pkg.new \
  "$target/wasm32-unknown-unknown/release/wgtrain_web.wasm"
rm -rf web/www/pkg.old
[ -d web/www/pkg ] && mv web/www/pkg web/www/pkg.old
mv web/www/pkg.new web/www/pkg
rm -rf web/www/pkg.old
mkdir -p web/www/data
cp assets/mnist-sample/*.gz web/www/data/
echo "built web/www ($(du -sh web/www/pkg/wgtrain_web_bg.wasm | cut -f1) of WebAssembly); serve it with: bash web/serve.sh" >&2
