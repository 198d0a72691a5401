"""`mien ui`: the web UI (Gradio) on this machine."""

from __future__ import annotations

import argparse
import sys

from mien.errors import MienError

EPILOG = """\
The page: upload a photo (or several of one person), pick the face, choose an expression (basic label and
intensity, a vocabulary word, Action Unit sliders with left and right, or a reference photo), generate,
compare before and after, download the PNG (it carries mien's metadata), or make the 7-label sheet.
Uploads are not kept; results are deleted within 10 minutes and when the server stops.

examples:
  mien ui                                  http://127.0.0.1:7860
  mien ui --port 8080 --steps 12           faster, rougher images by default
  mien ui --host 0.0.0.0                   reachable from other machines (no login: only on a trusted network)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the web UI (Gradio) in the browser",
                       description="Start mien's web UI: a Gradio page that edits the expression in a photo.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", default="default", help="a saved model folder (default: the built-in model)")
    p.add_argument("--person", metavar="PERSON_DIR", help="a personalised adapter folder from `mien personalize`")
    p.add_argument("--steps", type=int, default=None, help="the page's default sampler steps (default 25)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise MienError("mien ui needs Gradio; install it with: pip install -c constraints.txt -e \".[ui]\"") from None
    if not 1 <= args.port <= 65535:
        raise MienError(f"--port {args.port} is not a port; use a number from 1 to 65535")
    if args.steps is not None and not 2 <= args.steps <= 50:
        raise MienError(f"--steps {args.steps} is out of range; use 2 to 50")
    from mien.cli.checks import check_device

    check_device(args.device)
    check_port(args.host, args.port)  # before the nets take seconds to load
    from mien.ui.app import launch
    from mien.ui.service import Service

    service = Service.from_pretrained(args.model, person=args.person, device=args.device)  # every net, once
    print(f"mien ui: serving http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    try:
        launch(service, args.host, args.port, args.steps)
    except KeyboardInterrupt:  # Ctrl+C is how the server stops: a normal end, its results deleted with it
        print("mien ui: stopped; its results were deleted", file=sys.stderr)
    except OSError as e:
        raise MienError(f"cannot listen on {args.host}:{args.port} ({e}); choose another --port") from None
    finally:
        service.close()
    return 0


def check_port(host: str, port: int) -> None:
    """``host:port`` can be listened on now (a port in use is a one-line error, not one after loading)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a just-closed port is free
            s.bind((host, port))
    except OSError as e:
        raise MienError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port, or a --host "
                        "of this machine") from None
