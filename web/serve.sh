#!/usr/bin/env bash
# Serve the browser build (web/www, made by web/build.sh) on http://127.0.0.1:PORT/
# (default 8000). WebGPU needs a secure context: localhost / 127.0.0.1 counts as one.
set -euo pipefail
cd "$(dirname "$0")/www"
PORT="${1:-8000}"
if [ ! -f pkg/wgtrain_web.js ]; then
  echo "serve.sh: web/www/pkg/ is missing; run bash web/build.sh first" >&2
  exit 1
fi
echo "serving web/www on http://127.0.0.1:$PORT/ (Ctrl-C stops)" >&2
exec python3 - "$PORT" <<'PY'
import http.server, sys

class Handler(http.server.SimpleHTTPRequestHandler):
    # .wasm must be application/wasm for WebAssembly.instantiateStreaming.
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript",
                      ".mjs": "text/javascript", ".gz": "application/octet-stream",
                      ".safetensors": "application/octet-stream"}

    def end_headers(self):
        # A rebuilt package is picked up on reload.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
