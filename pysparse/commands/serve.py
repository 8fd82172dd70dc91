"""`pysparse serve`: the development server (JS runtime, demo, models, pack API); see docs/server.md."""
from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the demo, the JS runtime, models and the pack API",
                       description="Serve web/, demo/, dist/ and the models folder with cross-origin "
                                   "isolation headers (so pages may use threads), plus POST /api/pack.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--models", type=Path, default=None, help="folder of .spnn/.tflite/.onnx models served "
                   "under /models/ (default: the set-up's models folder)")
    p.add_argument("--dist", type=Path, default=None, help="folder served under /dist/ (default: ./dist, "
                   "where `make wheel` puts the pysparse wheel)")
    p.add_argument("--max-upload-mb", type=float, default=64, help="largest model POST /api/pack accepts")
    p.add_argument("--no-isolation", action="store_true",
                   help="leave out COOP/COEP (pages are then not cross-origin isolated: no threads)")
    p.add_argument("--open-demo", action="store_true", help="print the demo's URL and open it in a browser")
    p.add_argument("--no-demo", action="store_true", help="installed package: do not make the demo's models "
                   "(made on first use from the --models folder's hand models or npm's @mediapipe/hands)")
    p.set_defaults(func=run)


def run(args) -> int:
    from werkzeug.serving import make_server

    from .. import assets
    from ..server import create_app, serve_folders

    if args.models is not None and not args.models.is_dir():
        raise FileNotFoundError(f"{args.models}: no such folder")
    demo_ready = True
    if not assets.in_checkout():
        # An installed package makes the demo's models on first use (a checkout's `make demo` does).
        from .. import demo_assets
        problem = "not made (--no-demo)" if args.no_demo else demo_assets.prepare(args.models)
        if problem:
            demo_ready = False
            print(f"pysparse serve: demo: {problem}; serving the runtime and your models only", flush=True)
    app = create_app(models_dir=args.models, dist_dir=args.dist, isolation=not args.no_isolation,
                     max_upload=int(args.max_upload_mb * 1024 * 1024))
    server = make_server(args.host, args.port, app, threaded=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{server.server_port}"
    folders = serve_folders(dist_dir=args.dist)
    page = "/demo/" if demo_ready and (folders["demo"] / "index.html").is_file() else "/web/"
    # One line a script can wait for (tests read the port from it).
    print(f"pysparse serving {folders['root']} at {base}/ (demo: {base}{page})", flush=True)
    if args.open_demo:
        print(f"open {base}{page}", flush=True)
        # Without a display, webbrowser would fall back to a console browser: just print.
        if sys.platform != "linux" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            webbrowser.open(base + page)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
