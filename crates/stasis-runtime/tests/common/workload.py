# Test workload for runtime tests: a TCP server on port 8080 holding state in memory.
# One request per connection: a JSON object with "op"; the answer is one JSON line.
import ctypes, json, os, socket, subprocess, sys, threading

state = {"x": None}
hold = []
counter = subprocess.Popen(
    ["bash", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.tmp; mv /tmp/counter.tmp /tmp/counter; sleep 0.05; done"])
children = []

def handle(req):
    op = req["op"]
    if op == "get":
        try:
            count = int(open("/tmp/counter").read())
        except Exception:
            count = -1
        return {"x": state["x"], "counter": count, "pid": os.getpid(),
                "counter_pid": counter.pid, "uid": os.getuid(), "held_mb": len(hold)}
    if op == "set":
        state["x"] = req["value"]
        return {"ok": True}
    if op == "write":
        with open(req["path"], "w") as f:
            f.write(req["text"])
        return {"ok": True}
    if op == "read":
        try:
            return {"text": open(req["path"]).read()}
        except OSError as e:
            return {"error": e.strerror}
    if op == "hold":
        # Keep MB of non-compressible memory in this process.
        for _ in range(req["mb"]):
            hold.append(os.urandom(1 << 20))
        return {"held_mb": len(hold)}
    if op == "alloc_child":
        # Allocate MB in a child; report how it ended (killed by the OOM killer or not).
        p = subprocess.run([sys.executable, "-c",
                            "import os; b=[bytearray(1<<20) for _ in range(%d)]; print('ok')" % req["mb"]],
                           capture_output=True)
        return {"returncode": p.returncode}
    if op == "spawn":
        ok = 0
        for _ in range(req["n"]):
            try:
                children.append(subprocess.Popen(["sleep", "1000"]))
                ok += 1
            except OSError:
                break
        # Give a few pids back so this server can still start threads for requests.
        for c in children[-4:]:
            c.kill(); c.wait()
        del children[-4:]
        return {"spawned": ok}
    if op == "reap":
        for c in children:
            c.kill(); c.wait()
        children.clear()
        return {"ok": True}
    if op == "pids":
        return {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    if op == "connect":
        try:
            s = socket.create_connection((req["host"], req["port"]), timeout=1)
            s.close()
            return {"connected": True}
        except OSError as e:
            return {"connected": False, "error": str(e)}
    if op == "mount":
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
        return {"result": r, "errno": ctypes.get_errno()}
    if op == "unshare":
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.unshare(0x10000000)  # CLONE_NEWUSER
        return {"result": r, "errno": ctypes.get_errno()}
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
        except Exception as e:
            out = {"error": repr(e)}
        conn.sendall(json.dumps(out).encode() + b"\n")

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080))
srv.listen(64)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
