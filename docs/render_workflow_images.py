#!/usr/bin/env python3
"""Render pictures of the example workflows with the real ComfyUI front end.

Each UI-format workflow in ``workflows/*.json`` is opened by the ComfyUI front end that a running
ComfyUI serves (loaded in headless Chromium and driven through the DevTools protocol), fitted to the
view and saved as ``docs/images/workflows/<workflow name>.png``. A workflow that uses a node type the
front end does not know (a missing node, e.g. because this pack failed to import) makes the script fail.

Nothing here is a dependency of the comfyui-anytalk package; the tools it needs are:

* a running ComfyUI with this pack in ``custom_nodes/`` (CPU is enough), e.g.::

      cd /path/to/ComfyUI && python main.py --cpu --listen 127.0.0.1 --port 8188 --disable-auto-launch

  (check its log: no ``IMPORT FAILED`` for comfyui-anytalk);
* Chromium or Chrome (``apt-get install chromium`` on Debian/Ubuntu), found on PATH or given with
  ``--chromium``;
* Python >= 3.9 with ``websocket-client`` (``pip install websocket-client``) and, optionally, ``Pillow``
  >= 9.1 (``pip install pillow``) to shrink the PNGs to a 256-colour palette. The ComfyUI venv has Pillow
  already, so the simplest is to install ``websocket-client`` there and run this script with that
  Python.

Regenerate all pictures (from the repository root, ComfyUI already running)::

    /path/to/comfyvenv/bin/pip install websocket-client
    nice -n 15 /path/to/comfyvenv/bin/python docs/render_workflow_images.py

or only some workflows::

    python docs/render_workflow_images.py workflows/anytalk_video_driven.json

The pictures show the graph alone (ComfyUI's focus mode: no menus, side bar, minimap, canvas
buttons or render statistics; ``--keep-ui`` keeps the menus). Each picture is shaped like its graph
and has about as many pixels as a ``--width`` x ``--height`` (1600 x 900) one, within ``--max-width``
x ``--max-height``, so that a wide graph gets a wide picture whose titles and widget values stay
readable (the canvas zoom is printed as a warning when it falls below 0.5). Before the picture is
taken the script waits until image/video previews have loaded and node sizes stop changing, then
fits the view to the nodes and groups. PNGs are reduced to a 256-colour palette when Pillow is
available (about 70 KB each for the current workflows).

Image and video previews (Load Image, AnyTalk Load Video) show the files of those names in ComfyUI's
``input/`` folder (``anytalk_portrait.png``, ``anytalk_photo.png``, ``anytalk_cartoon_fox.png``,
``anytalk_driving.mp4``); copy them there first. A preview that cannot be loaded is reported as a
warning and the node is drawn without it.

Written against ComfyUI 0.3.64 serving comfyui-frontend-package 1.27.10 (``app.loadGraphData``,
``LiteGraph.registered_node_types``, the Pinia stores ``dialog``, ``toast``, ``setting`` and
``workspace``); a much newer front end may need the helpers in ``JS_HELPERS`` adjusted.

The script does not change the ComfyUI user's settings on the server: display settings are changed
in the page only. (Opening the front end with a fresh browser profile makes ComfyUI's own first-run
code mark ``Comfy.TutorialCompleted``, as any first visit does.)

Exit status: 0 when every picture was written; 2 when ComfyUI is not reachable, Chromium or
websocket-client is missing, the front end did not start, or a workflow could not be read; 3 when a
workflow has node types that the front end does not know (they are named).
"""

from __future__ import annotations

import argparse
import base64
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class RenderError(Exception):
    """A failure with a message for the user and an exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------
# DevTools protocol


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's WebSocket."""

    def __init__(self, ws_url: str, timeout: float):
        import websocket  # websocket-client

        self._ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._next_id = 0
        self.console: list[str] = []
        self.failed_requests: list[str] = []

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            self._ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = json.loads(self._ws.recv())
            except Exception as exc:  # timeout or closed socket
                raise RenderError(f"DevTools call {method} got no answer: {exc}") from exc
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RenderError(f"DevTools call {method} failed: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Network.responseReceived":
            response = params.get("response", {})
            if response.get("status", 0) >= 400:
                self.failed_requests.append(f"{response.get('status')} {response.get('url')}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params['type']}: {args}")

    def evaluate(self, expression: str, timeout: float = 60.0):
        """Evaluate a JavaScript expression (awaiting a promise) and return its JSON value."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RenderError(f"JavaScript error in the page: {text}")
        return result.get("result", {}).get("value")

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------------
# JavaScript run inside the ComfyUI page

JS_READY = """
(() => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph
          && window.LiteGraph.registered_node_types
          && Object.keys(window.LiteGraph.registered_node_types).length > 0
          && document.querySelector('#vue-app') && document.querySelector('#vue-app').__vue_app__))()
"""

# Helpers installed once in the page as window.__anytalkRender.
JS_HELPERS = r"""
(() => {
  const pinia = () => document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  const store = (id) => pinia()._s.get(id);
  const H = {
    frontendVersion: () => (window.__COMFYUI_FRONTEND_VERSION__ || null),
    // Display settings changed in memory only (not stored on the server).
    setLocal(key, value) {
      const s = store('setting');
      if (s) s.settingValues[key] = value;
    },
    closeDialogs() {
      const d = store('dialog');
      let closed = [];
      if (d) {
        for (let i = 0; i < 20 && d.dialogStack.length; i++) {
          const top = d.dialogStack[d.dialogStack.length - 1];
          closed.push(top.key);
          d.closeDialog({ key: top.key });
        }
      }
      const t = store('toast');
      if (t) t.removeAll();
      return closed;
    },
    openOverlays() {
      const found = [];
      for (const el of document.querySelectorAll('.p-dialog, .p-toast-message, .p-drawer, .p-popover')) {
        const r = el.getBoundingClientRect();
        if (r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden')
          found.push((el.className || el.tagName).toString().slice(0, 80) + ': '
                     + (el.innerText || '').trim().slice(0, 80).replace(/\s+/g, ' '));
      }
      return found;
    },
    workflowNodeTypes(wf) {
      const types = [];
      const add = (nodes, where) => { for (const n of nodes || []) types.push([n.type, where]); };
      add(wf.nodes, '');
      for (const sg of (wf.definitions && wf.definitions.subgraphs) || [])
        add(sg.nodes, ` (in subgraph ${sg.name || sg.id})`);
      return types;
    },
    missingTypes(wf) {
      const known = LiteGraph.registered_node_types;
      // Subgraph instances and legacy group nodes get their types from the workflow itself.
      const own = new Set(((wf.definitions && wf.definitions.subgraphs) || []).map((s) => s.id));
      for (const name of Object.keys((wf.extra && wf.extra.groupNodes) || {}))
        for (const sep of ['>', '/']) own.add('workflow' + sep + name);
      const missing = new Set();
      for (const [type, where] of H.workflowNodeTypes(wf))
        if (!(type in known) && !own.has(type)) missing.add(type + where);
      return [...missing];
    },
    async load(wf, name) {
      const before = H.missingTypes(wf);
      if (before.length) return { missing: before };
      await app.loadGraphData(wf, true, false, name,
                              { showMissingNodesDialog: false, showMissingModelsDialog: false });
      const bad = [];
      for (const n of app.graph.nodes) {
        if (n.has_errors || !(n.type in LiteGraph.registered_node_types) && !n.isSubgraphNode?.())
          bad.push(`${n.type} (node ${n.id})`);
      }
      return { missing: bad, nodes: app.graph.nodes.length,
               links: Object.keys(app.graph.links || {}).length || (app.graph.links?.size ?? 0) };
    },
    bounds() {
      const items = [...app.graph.nodes, ...(app.graph.groups || app.graph._groups || [])];
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const it of items) {
        const r = it.boundingRect || [it.pos[0], it.pos[1], it.size[0], it.size[1]];
        x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]);
        x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]);
      }
      return [x0, y0, x1 - x0, y1 - y0];
    },
    mediaPending() {
      // <img>/<video> previews (Load Image, Load Video) still loading: nodes grow when they arrive.
      let pending = 0;
      for (const v of document.querySelectorAll('video'))
        if (v.src && v.readyState < 2 && !v.error) pending++;
      for (const i of document.querySelectorAll('img'))
        if (i.src && !i.complete) pending++;
      for (const n of app.graph.nodes)
        for (const i of n.imgs || []) if (i.src && !i.complete) pending++;
      return pending;
    },
    async settledBounds(maxMs) {
      // Node sizes change while previews load; wait until the bounds stop changing.
      const t0 = performance.now();
      let last = null, same = 0;
      while (performance.now() - t0 < maxMs) {
        app.canvas.setDirty(true, true);
        app.canvas.draw(true, true);
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 250)));
        const b = H.bounds().map((v) => Math.round(v));
        if (last && b.every((v, k) => v === last[k]) && H.mediaPending() === 0) {
          if (++same >= 3) return { bounds: b, settled: true };
        } else same = 0;
        last = b;
      }
      return { bounds: last, settled: false };
    },
    freeArea() {
      // The part of the window where the canvas is visible: [left, top, right, bottom] in CSS pixels.
      const c = app.canvas.canvas, r = c.getBoundingClientRect();
      const W = window.innerWidth, Hh = window.innerHeight;
      const isCanvas = (x, y) => document.elementFromPoint(x, y) === c;
      let left = Math.max(0, r.left), top = Math.max(0, r.top);
      while (left < W / 2 && !isCanvas(left + 1, Hh / 2)) left++;
      while (top < Hh / 2 && !isCanvas(W / 2, top + 1)) top++;
      return [left, top, Math.min(W, r.right), Math.min(Hh, r.bottom)];
    },
    canvasSize() {
      const c = app.canvas.canvas, r = c.getBoundingClientRect();
      return [r.left, r.top, r.width, r.height];
    },
    view(scale, offset) {
      app.canvas.min_font_size_for_lod = 0;   // never the simplified far-away drawing
      app.canvas.show_info = false;           // no render statistics in the corner
      app.canvas.ds.scale = scale;
      app.canvas.ds.offset[0] = offset[0];
      app.canvas.ds.offset[1] = offset[1];
      app.canvas.setDirty(true, true);
      app.canvas.draw(true, true);
    },
  };
  window.__anytalkRender = H;
  return true;
})()
"""


# --------------------------------------------------------------------------------------------------
# Chromium


def find_chromium(explicit: str | None) -> str:
    if explicit:
        path = explicit if os.path.isfile(explicit) else shutil.which(explicit)
        if not path:
            raise RenderError(f"Chromium not found at {explicit!r}")
        return path
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise RenderError(
        "Chromium/Chrome not found on PATH (tried " + ", ".join(CHROMIUM_NAMES) + "); install it "
        "(e.g. `apt-get install chromium`) or pass --chromium /path/to/chromium"
    )


class Browser:
    """Headless Chromium with a throw-away profile and a DevTools port."""

    def __init__(self, executable: str, width: int, height: int, timeout: float):
        self.profile = tempfile.mkdtemp(prefix="anytalk-render-chromium-")
        args = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self.port = self._devtools_port(timeout)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if self.proc.poll() is not None:
                raise RenderError(f"Chromium exited at start (status {self.proc.returncode}):\n{self.tail_log()}")
            if time.monotonic() > deadline:
                raise RenderError(f"Chromium did not open its DevTools port in {timeout:.0f} s:\n{self.tail_log()}")
            time.sleep(0.2)
        time.sleep(0.2)
        with open(port_file) as f:
            return int(f.readline().strip())

    def tail_log(self) -> str:
        try:
            with open(os.path.join(self.profile, "chromium.log"), "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def page_ws_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
                    targets = json.load(r)
                for t in targets:
                    if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                        return t["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RenderError("Chromium has no page to drive")
            time.sleep(0.3)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Rendering


def check_comfyui(url: str) -> dict:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/system_stats", timeout=10) as r:
            return json.load(r)
    except (OSError, ValueError) as exc:
        raise RenderError(
            f"ComfyUI is not reachable at {url} ({exc}). Start it first, e.g.\n"
            "  cd /path/to/ComfyUI && python main.py --cpu --listen 127.0.0.1 --port 8188 --disable-auto-launch"
        ) from exc


def optimise_png(data: bytes) -> bytes:
    """Shrink a screenshot to a 256-colour palette PNG (if Pillow is there); keep the smaller one."""
    try:
        from PIL import Image
    except ImportError:
        return data
    image = Image.open(io.BytesIO(data)).convert("RGB")
    quantized = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    quantized.save(out, format="PNG", optimize=True)
    small = out.getvalue()
    return small if len(small) < len(data) else data


def wait_for(dt: DevTools, expression: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if dt.evaluate(expression, timeout=10):
                return
        except RenderError:
            pass
        if time.monotonic() > deadline:
            tail = "\n".join(dt.console[-15:])
            raise RenderError(f"{what} (waited {timeout:.0f} s)" + (f"; page messages:\n{tail}" if tail else ""))
        time.sleep(0.5)


def render_all(args: argparse.Namespace, workflows: list[str]) -> list[tuple[str, int, tuple[int, int]]]:
    chromium = find_chromium(args.chromium)
    try:
        import websocket  # noqa: F401  (websocket-client)
    except ImportError as exc:
        raise RenderError(
            "the Python package websocket-client is missing: pip install websocket-client "
            f"(into the Python that runs this script: {sys.executable})"
        ) from exc
    stats = check_comfyui(args.comfyui_url)
    version = stats.get("system", {}).get("comfyui_version", "?")
    print(f"ComfyUI {version} at {args.comfyui_url}; browser {chromium}")

    loaded = []
    for path in workflows:
        try:
            with open(path, encoding="utf-8") as f:
                wf = json.load(f)
        except (OSError, ValueError) as exc:
            raise RenderError(f"cannot read workflow {path}: {exc}") from exc
        if not isinstance(wf, dict) or not isinstance(wf.get("nodes"), list):
            raise RenderError(f"{path} is not a UI-format workflow (no 'nodes' list); API-format files cannot be drawn")
        loaded.append((path, wf))

    os.makedirs(args.out, exist_ok=True)
    browser = Browser(chromium, args.width, args.height, args.timeout)
    dt = None
    written = []
    try:
        dt = DevTools(browser.page_ws_url(args.timeout), args.timeout)
        dt.call("Runtime.enable")
        dt.call("Page.enable")
        dt.call("Network.enable")
        dt.call("Emulation.setDeviceMetricsOverride",
                {"width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False})
        dt.call("Page.navigate", {"url": args.comfyui_url.rstrip("/") + "/"})
        wait_for(dt, JS_READY, args.timeout, "the ComfyUI front end did not become ready")
        dt.evaluate(JS_HELPERS)
        # Let start-up work finish (restoring the last workflow, the first-run templates browser, ...).
        time.sleep(args.settle)
        fe_version = dt.evaluate("window.__anytalkRender.frontendVersion()")
        print(f"front end {fe_version or '?'} ready")
        if not args.keep_ui:
            for key, value in (("Comfy.Minimap.Visible", False), ("Comfy.Graph.CanvasMenu", False),
                               ("Comfy.Graph.CanvasInfo", False)):
                dt.evaluate(f"window.__anytalkRender.setLocal({json.dumps(key)}, {json.dumps(value)})")
            dt.evaluate("(() => { const w = document.querySelector('#vue-app').__vue_app__.config"
                        ".globalProperties.$pinia._s.get('workspace'); w.focusMode = true; return true })()")
            # The small "leave focus mode" button that focus mode shows.
            dt.evaluate("(() => { const s = document.createElement('style'); s.textContent ="
                        " '.comfy-menu-hamburger { display: none !important; }';"
                        " document.head.appendChild(s); return true })()")
        closed = dt.evaluate("window.__anytalkRender.closeDialogs()")
        if closed and args.verbose:
            print(f"closed start-up dialogs: {closed}")

        failures = []
        for path, wf in loaded:
            name = os.path.splitext(os.path.basename(path))[0]
            dt.failed_requests.clear()
            result = dt.evaluate(
                f"window.__anytalkRender.load({json.dumps(wf)}, {json.dumps(os.path.basename(path))})",
                timeout=args.timeout,
            )
            if result.get("missing"):
                failures.append((path, result["missing"]))
                print(f"FAILED {path}: node types unknown to the front end: {', '.join(result['missing'])}",
                      file=sys.stderr)
                continue
            png, size = screenshot(dt, args, path)
            out_path = os.path.join(args.out, name + ".png")
            with open(out_path, "wb") as f:
                f.write(png)
            written.append((out_path, len(png), size))
            print(f"{path}: {result['nodes']} nodes, {result['links']} links -> {out_path} "
                  f"({size[0]}x{size[1]}, {len(png) / 1024:.0f} KiB)")
        if failures:
            raise RenderError(
                "missing nodes in " + "; ".join(f"{p}: {', '.join(m)}" for p, m in failures)
                + "\n(is comfyui-anytalk in ComfyUI's custom_nodes/ and did it import? check the ComfyUI log "
                "for IMPORT FAILED)",
                status=3,
            )
    finally:
        if dt is not None:
            if args.verbose and dt.console:
                print("page messages:\n  " + "\n  ".join(dt.console[-30:]))
            dt.close()
        browser.close()
    return written


def picture_size(bounds: list[float], args: argparse.Namespace) -> tuple[int, int, float]:
    """Width, height and canvas zoom of the picture of a graph with these bounds.

    The picture is shaped like the graph and has about as many pixels as a --width x --height
    picture, within --max-width x --max-height and a zoom of at most --max-zoom.
    """
    _, _, bw, bh = bounds
    margin = 2 * args.margin
    zoom = min(args.max_zoom, (args.width * args.height / (bw * bh)) ** 0.5)
    zoom = min(zoom, (args.max_width - margin) / bw, (args.max_height - margin) / bh)
    return int(round(bw * zoom + margin)), int(round(bh * zoom + margin)), zoom


def screenshot(dt: DevTools, args: argparse.Namespace, label: str) -> tuple[bytes, tuple[int, int]]:
    """Fit the loaded graph into a viewport sized for it and capture it."""
    h = "window.__anytalkRender"
    settled = dt.evaluate(f"{h}.settledBounds({int(args.settle_graph * 1000)})", timeout=args.settle_graph + 60)
    if not settled["settled"]:
        print(f"warning: {label}: node sizes still changing after {args.settle_graph:.0f} s "
              "(a preview that does not load?); drawing it as it is", file=sys.stderr)
    for request in dict.fromkeys(re.sub(r"&rand=[^&]*", "", r) for r in dt.failed_requests if "/view?" in r):
        print(f"warning: {label}: a preview did not load (is the file in ComfyUI's input/ folder?): {request}",
              file=sys.stderr)
    bounds = settled["bounds"]
    if not bounds or None in bounds or bounds[2] <= 0 or bounds[3] <= 0:
        raise RenderError(f"{label}: the workflow has no nodes to draw")
    width, height, zoom = picture_size(bounds, args)

    def resize(w: int, ht: int) -> list[float]:
        dt.call("Emulation.setDeviceMetricsOverride", {"width": w, "height": ht, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.5)  # let the canvas follow the new window size
        return dt.evaluate(f"{h}.freeArea()")

    # Where the canvas is not covered by menus (only with --keep-ui): make the picture that much bigger.
    left, top, _, _ = resize(width, height)
    if left or top:
        width, height = width + int(left), height + int(top)
        left, top, _, _ = resize(width, height)
    _, _, right, bottom = dt.evaluate(f"{h}.freeArea()")
    bx, by, bw, bh = bounds
    free_w, free_h = right - left, bottom - top
    zoom = min(zoom, (free_w - 2 * args.margin) / bw, (free_h - 2 * args.margin) / bh)
    if zoom < 0.5:
        print(f"warning: {label}: drawn at zoom {zoom:.2f}, small text may be hard to read "
              "(raise --max-width/--max-height or --width/--height)", file=sys.stderr)
    # Centre the graph in the free area of the canvas: canvas pixel = (graph + offset) * scale.
    cx, cy, _, _ = dt.evaluate(f"{h}.canvasSize()")
    offset = [(left - cx + (free_w - bw * zoom) / 2) / zoom - bx, (top - cy + (free_h - bh * zoom) / 2) / zoom - by]
    overlays = []
    for _ in range(3):
        dt.evaluate(f"{h}.closeDialogs()")
        dt.evaluate(f"{h}.view({zoom}, {json.dumps(offset)})")
        time.sleep(0.7)  # DOM widgets and the canvas redraw on the next animation frames
        overlays = dt.evaluate(f"{h}.openOverlays()")
        if not overlays:
            break
    else:
        raise RenderError(f"{label}: a dialog or message stays over the graph: " + "; ".join(overlays))
    shot = dt.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, timeout=120)
    data = base64.b64decode(shot["data"])
    if not args.no_optimise:
        data = optimise_png(data)
    return data, (width, height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflows", nargs="*",
                        help="UI-format workflow files (default: every workflows/*.json of this repository)")
    parser.add_argument("--comfyui-url", default="http://127.0.0.1:8188", help="running ComfyUI (default %(default)s)")
    parser.add_argument("--chromium", default=None, help="Chromium/Chrome executable (default: found on PATH)")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "docs", "images", "workflows"),
                        help="output folder (default docs/images/workflows)")
    parser.add_argument("--width", type=int, default=1600,
                        help="pixel budget: each picture has about as many pixels as a WIDTH x HEIGHT one, "
                        "shaped like its graph (default %(default)s)")
    parser.add_argument("--height", type=int, default=900, help="see --width (default %(default)s)")
    parser.add_argument("--max-width", type=int, default=2400, help="widest picture (default %(default)s)")
    parser.add_argument("--max-height", type=int, default=1400, help="tallest picture (default %(default)s)")
    parser.add_argument("--max-zoom", type=float, default=1.0, help="largest canvas zoom (default %(default)s)")
    parser.add_argument("--margin", type=int, default=24, help="pixels around the graph (default %(default)s)")
    parser.add_argument("--keep-ui", action="store_true", help="keep ComfyUI's menus, side bar and minimap")
    parser.add_argument("--no-optimise", action="store_true", help="keep Chromium's PNG as it is")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to let the front end finish starting (default %(default)s)")
    parser.add_argument("--settle-graph", type=float, default=20.0,
                        help="longest wait for a loaded graph's previews and node sizes (default %(default)s s)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for Chromium and the front end (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the page's errors and warnings")
    args = parser.parse_args(argv)

    workflows = args.workflows or sorted(glob.glob(os.path.join(REPO_ROOT, "workflows", "*.json")))
    if not workflows:
        print("no workflows to render", file=sys.stderr)
        return 2
    try:
        written = render_all(args, workflows)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    print(f"wrote {len(written)} picture(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
