#!/usr/bin/env python3
"""A tiny MCP server for scripts/e2e-codex-cli, over stdio or over streamable HTTP.

    mcp_server.py --stdio            newline-delimited JSON-RPC on stdin/stdout
    mcp_server.py --http             listens on 127.0.0.1:0 and prints the port on stdout

One tool, `executor_probe`, answers with facts only the process that started the server (stdio)
or that sent the HTTP request (http) can produce: the value of $E2E_EXECUTOR_MARK in this
process's environment (stdio: the executor's environment reached the server), the pid of the
process that owns the peer socket (http: the request came from the executor), and the
`authorization` request header (http).
"""
import http.server
import json
import os
import sys

PROTOCOL_VERSION = "2025-06-18"
TOOL = {
    "name": "executor_probe",
    "description": "Report which process this MCP server runs in (e2e probe).",
    "inputSchema": {"type": "object", "properties": {"word": {"type": "string"}}},
}


def handle(msg, extra):
    """Answers one JSON-RPC message; None for a notification."""
    if "id" not in msg:
        return None
    method = msg.get("method")
    params = msg.get("params") or {}
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", PROTOCOL_VERSION),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "e2e-probe", "version": "1.0.0"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call" and params.get("name") == TOOL["name"]:
        facts = {
            "word": (params.get("arguments") or {}).get("word", ""),
            "mark": os.environ.get("E2E_EXECUTOR_MARK", "<unset>"),
            "mcp_pid": os.getpid(),
            "ancestors": ancestors(),
        }
        facts.update(extra)
        text = "executor_probe " + json.dumps(facts, sort_keys=True)
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": msg["id"],
                "error": {"code": -32601, "message": f"method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": msg["id"], "result": result}


def ancestors():
    """This process's parent, grandparent, ... up to pid 1."""
    chain = []
    pid = os.getppid()
    while pid > 1 and len(chain) < 64:
        chain.append(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return chain


def serve_stdio():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        answer = handle(msg, {"transport": "stdio"})
        if answer is not None:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


def socket_owner_pid(peer_port, local_port):
    """The pid owning the loopback TCP socket 127.0.0.1:peer_port -> :local_port, or None."""
    want_local = f"0100007F:{peer_port:04X}"
    want_remote = f"0100007F:{local_port:04X}"
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want_local and cols[2] == want_remote:
                inode = cols[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return int(pid)
        except OSError:
            continue
    return None


class HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("mcp-session-id", "e2e-session")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(405, b"", "text/plain")

    def do_DELETE(self):
        self.reply(200, b"", "text/plain")

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            msg = json.loads(self.rfile.read(length))
        except ValueError:
            self.reply(400, b"bad json", "text/plain")
            return
        extra = {
            "transport": "http",
            "peer_pid": socket_owner_pid(self.client_address[1], self.server.server_address[1]),
            "authorization": self.headers.get("authorization", "<none>"),
        }
        messages = msg if isinstance(msg, list) else [msg]
        answers = [a for a in (handle(m, extra) for m in messages) if a is not None]
        if not answers:
            self.reply(202)
            return
        body = json.dumps(answers if isinstance(msg, list) else answers[0]).encode()
        self.reply(200, body)


def serve_http():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stdio"]:
        serve_stdio()
    elif sys.argv[1:] == ["--http"]:
        serve_http()
    else:
        sys.exit("usage: mcp_server.py --stdio | --http")
