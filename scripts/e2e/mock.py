"""A mock of the model's Responses API for scripts/e2e-codex-cli (Python 3 stdlib only).

`POST /v1/responses` answers with an SSE stream: `response.created`, one
`response.output_item.done` per item, `response.completed`. Which items is decided by the loaded
script: step N runs once the request carries the outputs of the calls of steps 0..N-1 (the mock
counts the outputs whose call_id it issued), and after the last step it answers with a final
message. Every output the CLI sends back is recorded by call_id as text, for the scenario's check.
Any other path gets 404, recorded as an error.
"""
import http.server
import json
import threading
import time


def function_call(call_id, name, arguments, namespace=None):
    item = {"type": "function_call", "id": "fc_" + call_id, "call_id": call_id, "name": name,
            "arguments": json.dumps(arguments)}
    if namespace:
        item["namespace"] = namespace
    return item


def custom_tool_call(call_id, name, text):
    return {"type": "custom_tool_call", "id": "ctc_" + call_id, "call_id": call_id, "name": name,
            "input": text}


def tool_search_call(call_id, query):
    return {"type": "tool_search_call", "id": "ts_" + call_id, "call_id": call_id,
            "execution": "client", "arguments": {"query": query, "limit": 8}}


def message(text):
    return {"type": "message", "role": "assistant", "id": "msg_e2e",
            "content": [{"type": "output_text", "text": text}]}


def as_text(output):
    """An output item's payload as one string, whatever its shape."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(i, dict) and "text" in i for i in output):
        return "\n".join(i["text"] for i in output)  # content items
    return json.dumps(output)


OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output", "tool_search_output")
CALL_TYPES = ("function_call", "custom_tool_call", "tool_search_call")


class MockModel:
    def __init__(self):
        self._lock = threading.Lock()
        self._steps, self._ctx = [], {}
        self._outputs, self._calls = {}, []
        self.error, self.finished = None, False
        self.first_request = self.last_answer = None
        model = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(404, "text/plain", b"not found")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.rstrip("/") != "/v1/responses":
                    model._fail(f"unexpected POST {self.path}")
                    self._send(404, "text/plain", b"not found")
                    return
                try:
                    items = model._answer(json.loads(body))
                except Exception as e:  # a scenario bug: report it, end the turn
                    model._fail(f"step failed: {e!r}")
                    items = [message("mock error")]
                events = [{"type": "response.created", "response": {"id": "resp_e2e"}}]
                events += [{"type": "response.output_item.done", "item": i} for i in items]
                events.append({"type": "response.completed", "response": {
                    "id": "resp_e2e", "usage": {"input_tokens": 1, "output_tokens": 1,
                                                "total_tokens": 2}}})
                sse = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
                self._send(200, "text/event-stream", sse.encode())

            def _send(self, status, content_type, data):
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def load(self, steps, ctx):
        with self._lock:
            self._steps, self._ctx = list(steps), ctx
            self._outputs, self._calls = {}, []
            self.error, self.finished = None, False
            self.first_request = self.last_answer = None

    def _fail(self, what):
        with self._lock:
            if self.error is None:
                self.error = what

    def _answer(self, req):
        dump = self._ctx.get("dump_dir")
        if dump:
            with self._lock:
                self._dumped = getattr(self, "_dumped", 0) + 1
                n = self._dumped
            with open(f"{dump}/request-{n}.json", "w") as f:
                json.dump(req, f, indent=1)
        with self._lock:
            now = time.monotonic()
            if self.first_request is None:
                self.first_request = now
            ours = set()
            for item in req.get("input", []):
                call_id = str(item.get("call_id", ""))
                if item.get("type") in CALL_TYPES and call_id.startswith("e2e"):
                    ours.add(call_id)
            done = 0
            for item in req.get("input", []):
                if item.get("type") in OUTPUT_TYPES and item.get("call_id") in ours:
                    payload = item.get("output", item.get("tools"))
                    self._outputs[item["call_id"]] = as_text(payload)
                    done += 1
            steps = self._steps
        # Step N runs when the outputs of steps 0..N-1 are in (one call per step).
        if done < len(steps):
            items = steps[done](req, self.outputs(), self._ctx)
        else:
            items = [message("e2e turn done")]
        with self._lock:
            for i in items:
                if i["type"] in CALL_TYPES:
                    name = i.get("name", i["type"].replace("_call", ""))
                    if i.get("namespace"):
                        name = i["namespace"] + "." + name
                    self._calls.append(name)
            if done >= len(steps):
                self.finished = True
            self.last_answer = time.monotonic()
        return items

    def outputs(self):
        with self._lock:
            return dict(self._outputs)

    def calls(self):
        with self._lock:
            return list(self._calls)

    def turn_seconds(self):
        with self._lock:
            if self.first_request is None or self.last_answer is None:
                return None
            return self.last_answer - self.first_request

    def close(self):
        self._server.shutdown()
        self._server.server_close()
