# Test workload for the workload tests: a TCP server on port 8080 that runs Python
# snippets in one long-lived namespace, so a test can build state (threads, sockets,
# shared memory, child processes, ...) before a pause and inspect it after the resume.
# One request per connection: {"op": "exec", "code": "..."}; the snippet sets `result`,
# and the answer is {"result": ...} or {"error": "..."} as one JSON line.
# {"op": "get"} answers {"pid": ...} (readiness).
import json, os, socket, threading, traceback

env = {"__name__": "lab"}
lock = threading.Lock()

def handle(req):
    op = req["op"]
    if op == "get":
        return {"pid": os.getpid()}
    if op == "exec":
        with lock:
            env["result"] = None
            exec(req["code"], env)
            return {"result": env["result"]}
    return {"error": "unknown op " + op}

def serve(conn):
    with conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        try:
            out = handle(json.loads(data))
        except Exception:
            out = {"error": traceback.format_exc()}
        conn.sendall(json.dumps(out, default=repr).encode() + b"\n")

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080))
srv.listen(64)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
