#!/usr/bin/env python3
"""A fake Hugging Face Hub for ckptio's tests (standard library only).

Two HTTP servers on 127.0.0.1 with ports chosen by the OS:
  hub  HEAD/GET /{org}/{name}/resolve/{revision}/{path}: the resolve protocol with the real
       headers (X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size, X-Error-Code). LFS files
       answer 302 to the CDN; regular files answer 200 with their git-sha1 ETag.
  cdn  GET /blob/{sha256}: the LFS bytes, with Range support.

Usage: fake_hub_server.py STATE_DIR [--lifetime SECONDS]
STATE_DIR/repos.json (reloaded when it changes) describes the repos:
  {"repos": {"org/name": {"refs": {"main": "<commit>", ...},
                          "commits": {"<commit>": {"path/in/repo": {"file": "/abs", "lfs": true}}},
                          "gated_token": "...",            # optional: 403 GatedRepo without it
                          "renamed_to": "org/other"}}}     # optional: relative 307 redirect
STATE_DIR/faults.json (optional, reread on every request): a list of
  {"id": "f1", "server": "hub"|"cdn", "method": "GET"|"HEAD"|"*", "match": "<substring of path>",
   "kind": "drop"|"corrupt"|"status"|"ignore_range"|"stall"|"slow"|"hang" (hub: never answer),
   "times": N (default: always), "after": bytes, "status": 500, "error_code": "...",
   "delay": seconds, "chunk": bytes,
   "until_released": true}  # stall/hang: instead of "delay", wait until STATE_DIR/released-<id>
                            # exists (FakeHub::release), at most 60 s; the client's own timeout
                            # has to end the request, however slow the machine is
Every request is appended to STATE_DIR/requests.log as one JSON line (before its body is sent),
and a second line with "event": "done" once a body has been sent in full. The ports are printed as one
JSON line on stdout ({"hub": P, "cdn": Q}) and written to STATE_DIR/ports.json.

The process exits by itself after --lifetime seconds (default 120) or when its parent dies.
"""

import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

STATE_DIR = sys.argv[1]
LIFETIME = 120.0
if "--lifetime" in sys.argv:
    LIFETIME = float(sys.argv[sys.argv.index("--lifetime") + 1])

LOCK = threading.Lock()
FAULT_FIRED = {}
REPOS = {"mtime": None, "data": {}, "files": {}, "by_sha": {}}
PORTS = {}

EXPOSE = ("X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,"
          "Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag,X-Xet-Hash")


def load_repos():
    path = os.path.join(STATE_DIR, "repos.json")
    mtime = os.stat(path).st_mtime_ns
    with LOCK:
        if REPOS["mtime"] == mtime:
            return REPOS
    with open(path) as f:
        data = json.load(f)
    files = {}
    by_sha = {}
    for repo in data.get("repos", {}).values():
        for commit in repo.get("commits", {}).values():
            for name, entry in commit.items():
                if entry["file"] in files:
                    continue
                with open(entry["file"], "rb") as f:
                    content = f.read()
                sha256 = hashlib.sha256(content).hexdigest()
                git_sha1 = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
                files[entry["file"]] = {"content": content, "sha256": sha256, "git_sha1": git_sha1}
                by_sha.setdefault(sha256, {"file": entry["file"], "names": set()})
                by_sha[sha256]["names"].add(name)
    with LOCK:
        REPOS.update(mtime=mtime, data=data, files=files, by_sha=by_sha)
        return REPOS


def load_faults():
    path = os.path.join(STATE_DIR, "faults.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def take_fault(server, method, names):
    """The first active fault for this request; counts it as fired."""
    for fault in load_faults():
        if fault.get("server", "cdn") != server:
            continue
        if fault.get("method", "*") not in ("*", method):
            continue
        if not any(fault.get("match", "") in n for n in names):
            continue
        with LOCK:
            fired = FAULT_FIRED.get(fault["id"], 0)
            if fault.get("times", -1) >= 0 and fired >= fault["times"]:
                continue
            FAULT_FIRED[fault["id"]] = fired + 1
        return fault
    return None


def hold(fault, default_delay):
    """Keeps a stalled or hung request waiting: for "delay" seconds, or until the test releases
    the fault when it has "until_released"."""
    if not fault.get("until_released"):
        time.sleep(min(float(fault.get("delay", default_delay)), 20))
        return
    released = os.path.join(STATE_DIR, "released-" + fault["id"])
    deadline = time.monotonic() + 60
    while not os.path.exists(released) and time.monotonic() < deadline:
        time.sleep(0.01)


def log_request(server, handler, status, extra=None):
    record = {
        "server": server,
        "method": handler.command,
        "path": handler.path,
        "range": handler.headers.get("Range"),
        "auth": handler.headers.get("Authorization"),
        "status": status,
        "t": time.monotonic(),
    }
    if extra:
        record.update(extra)
    with LOCK:
        with open(os.path.join(STATE_DIR, "requests.log"), "a") as f:
            f.write(json.dumps(record) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    server_role = "hub"
    timeout = 30  # a silent client cannot hold a thread forever

    def log_message(self, fmt, *args):  # keep the test output clean
        pass

    def do_HEAD(self):
        self.handle_request()

    def do_GET(self):
        self.handle_request()

    def handle_request(self):
        try:
            if self.server_role == "hub":
                self.handle_hub()
            else:
                self.handle_cdn()
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- helpers ---------------------------------------------------------------------------

    def send_error_code(self, status, code, message, commit=None, fault=None):
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        body = message.encode()
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Expose-Headers", EXPOSE)
        log_request(self.server_role, self, status, {"fault": fault["id"]} if fault else None)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_body(self, content, fault, extra_headers, role):
        """Sends content honouring Range, with the fault's damage applied. The request is logged
        before the body goes out, so a client that has its bytes always finds its log line."""
        total = len(content)
        start, end = 0, total - 1
        rng = self.headers.get("Range")
        status = 200
        if rng and not (fault and fault["kind"] == "ignore_range"):
            spec = rng.split("=", 1)[1]
            first, _, last = spec.partition("-")
            start = int(first)
            end = int(last) if last else total - 1
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % total)
                self.send_header("Content-Length", "0")
                log_request(role, self, 416)
                self.end_headers()
                return 416
            status = 206
        body = bytearray(content[start:end + 1])
        self.send_response(status)
        for k, v in extra_headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, total))
        log_request(role, self, status, {"fault": fault["id"]} if fault else None)
        self.end_headers()
        if self.command == "HEAD":
            return status
        kind = fault["kind"] if fault else None
        if kind == "corrupt" and body:
            pos = min(fault.get("after", 0), len(body) - 1)
            body[pos] ^= 0xFF
        if kind in ("drop", "stall"):
            cut = min(fault.get("after", 0), len(body))
            self.wfile.write(bytes(body[:cut]))
            self.wfile.flush()
            if kind == "stall":
                hold(fault, 3)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return status
        if kind == "slow":
            chunk = max(1, int(fault.get("chunk", 4096)))
            for i in range(0, len(body), chunk):
                self.wfile.write(bytes(body[i:i + chunk]))
                self.wfile.flush()
                time.sleep(min(float(fault.get("delay", 0.01)), 1))
            log_request(role, self, status, {"event": "done"})
            return status
        self.wfile.write(bytes(body))
        self.wfile.flush()
        log_request(role, self, status, {"event": "done"})
        return status

    # --- the two servers ------------------------------------------------------------------

    def handle_hub(self):
        state = load_repos()
        raw_path = self.path.split("?", 1)[0]
        parts = raw_path.split("/")
        if len(parts) < 6 or parts[3] != "resolve":
            self.send_error_code(404, None, "not a resolve URL")
            return
        repo_id = urllib.parse.unquote(parts[1]) + "/" + urllib.parse.unquote(parts[2])
        rev_enc = parts[4]
        revision = urllib.parse.unquote(rev_enc)
        filename = urllib.parse.unquote("/".join(parts[5:]))
        fault = take_fault("hub", self.command, [filename])
        if fault and fault["kind"] == "hang":
            # Logged now, then never answered: the client's timeout has to notice.
            log_request("hub", self, 0, {"fault": fault["id"]})
            hold(fault, 3)
            self.close_connection = True
            return
        if fault and fault["kind"] == "status":
            self.send_error_code(fault.get("status", 500), fault.get("error_code"), "injected fault",
                                 fault=fault)
            return
        repos = state["data"].get("repos", {})
        repo = repos.get(repo_id)
        if repo is not None and "renamed_to" in repo:
            self.send_response(307)
            self.send_header("Location", "/%s/resolve/%s/%s" % (repo["renamed_to"], rev_enc,
                                                                 "/".join(parts[5:])))
            self.send_header("Content-Length", "0")
            log_request("hub", self, 307)
            self.end_headers()
            return
        if repo is None:
            self.send_error_code(404, "RepoNotFound", "Repository not found")
            return
        if "gated_token" in repo and self.headers.get("Authorization") != "Bearer " + repo["gated_token"]:
            self.send_error_code(403, "GatedRepo", "Access to this repo is restricted")
            return
        commits = repo.get("commits", {})
        commit = revision if revision in commits else repo.get("refs", {}).get(revision)
        if commit is None:
            self.send_error_code(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return
        entry = commits[commit].get(filename)
        if entry is None:
            self.send_error_code(404, "EntryNotFound", "Entry not found", commit=commit)
            return
        info = state["files"][entry["file"]]
        headers = {"X-Repo-Commit": commit, "Access-Control-Expose-Headers": EXPOSE}
        if entry.get("lfs"):
            self.send_response(302)
            location = "http://127.0.0.1:%d/blob/%s?sig=signed" % (PORTS["cdn"], info["sha256"])
            self.send_header("Location", location)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", '"%s"' % info["sha256"])
            self.send_header("X-Linked-Size", str(len(info["content"])))
            pointer_sha1 = hashlib.sha1(info["sha256"].encode()).hexdigest()
            self.send_header("ETag", '"%s"' % pointer_sha1)
            self.send_header("Content-Length", "0")
            self.send_header("Access-Control-Expose-Headers", EXPOSE)
            log_request("hub", self, 302)
            self.end_headers()
            return
        headers["ETag"] = (('W/"%s"' if entry.get("weak_etag") else '"%s"') % info["git_sha1"])
        self.send_body(info["content"], fault, headers, "hub")

    def handle_cdn(self):
        state = load_repos()
        parts = self.path.split("?", 1)[0].split("/")
        blob = state["by_sha"].get(parts[-1]) if len(parts) == 3 and parts[1] == "blob" else None
        if blob is None:
            self.send_error_code(404, None, "no such blob")
            return
        fault = take_fault("cdn", self.command, sorted(blob["names"]))
        if fault and fault["kind"] == "status":
            self.send_error_code(fault.get("status", 500), fault.get("error_code"), "injected fault",
                                 fault=fault)
            return
        content = state["files"][blob["file"]]["content"]
        self.send_body(content, fault, {"ETag": '"%s"' % parts[-1]}, "cdn")


class HubHandler(Handler):
    server_role = "hub"


class CdnHandler(Handler):
    server_role = "cdn"


def main():
    load_repos()
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CdnHandler)
    hub.daemon_threads = cdn.daemon_threads = True
    PORTS["hub"] = hub.server_address[1]
    PORTS["cdn"] = cdn.server_address[1]
    for server in (hub, cdn):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    line = json.dumps(PORTS)
    with open(os.path.join(STATE_DIR, "ports.json"), "w") as f:
        f.write(line)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    parent = os.getppid()
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


if __name__ == "__main__":
    main()
