//! What real workloads hold, paused and resumed with real runc and CRIU: file watchers,
//! stopped jobs, deleted files, traced processes, `sudo`, and the kernel objects that
//! dev servers, databases and terminals keep (threads, shared memory, event fds, pipes,
//! sockets, locks, zombies, ...). Each sandbox runs the lab (`common/lab.py`), which
//! executes Python snippets in one namespace, so a test builds state before a pause and
//! checks it after the resume.
//! Run as root on a host prepared by `scripts/setup.sh` with the `base` template built.

mod common;

use common::*;
use serde_json::json;
use stasis_runtime::preflight::Freezer;
use stasis_runtime::{PauseMode, Runtime};
use stasis_types::Resources;

/// Snippet helpers loaded into the lab's namespace once per sandbox.
const PRELUDE: &str = r#"
import ctypes, os, signal, socket, struct, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)

def check(r, what):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))
    return r

def proc_state(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("State:"):
            return line.split()[1]

def find_pid(argv):
    want = "\0".join(argv) + "\0"
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open("/proc/%s/cmdline" % p).read() == want:
                    return int(p)
            except OSError:
                pass
    return None
"#;

fn lab(resources: Resources) -> Guard {
    let sb = create_lab(&runtime(), resources);
    sb.exec(PRELUDE);
    sb
}

fn pause_and_resume(sb: &Guard) {
    let rt = &sb.rt;
    rt.pause(sb.id(), PauseMode::Full).unwrap_or_else(|e| {
        panic!(
            "pause of {} failed: {e}: {:?}",
            sb.id(),
            std::error::Error::source(&e).map(|s| s.to_string())
        )
    });
    rt.resume(sb.id()).unwrap_or_else(|e| {
        panic!(
            "resume of {} failed: {e}: {:?}",
            sb.id(),
            std::error::Error::source(&e).map(|s| s.to_string())
        )
    });
    sb.ready();
}

/// Like [`pause_and_resume`], but fails the test if the pause takes longer than `limit`
/// (a hung CRIU would otherwise hang the test).
fn pause_and_resume_within(sb: &Guard, limit: std::time::Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (rt, id) = (sb.rt.clone(), sb.id().clone());
    std::thread::spawn(move || {
        let _ = tx.send(rt.pause(&id, PauseMode::Full).map_err(|e| format!("{e:?}")));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("pause of {} failed: {e}", sb.id()),
        Err(_) => panic!("pause of {} did not finish within {limit:?}", sb.id()),
    }
    sb.rt
        .resume(sb.id())
        .unwrap_or_else(|e| panic!("resume of {} failed: {e:?}", sb.id()));
    sb.ready();
}

/// Polls a snippet until its `result` is true, for at most `secs` seconds.
fn wait_for(sb: &Guard, secs: u64, what: &str, code: &str) {
    let mut last;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        last = sb.exec(code);
        if last == json!(true) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last answer {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn inotify_watches_on_the_sandboxs_own_files_fire_after_resume() {
    let sb = lab(Resources::default());
    let watches = sb.exec(
        r#"
IN_NONBLOCK = 0o4000
IN_MODIFY, IN_CREATE = 0x2, 0x100
ifd = check(libc.inotify_init1(IN_NONBLOCK), "inotify_init1")
watched = {}
def watch(path, mask):
    watched[check(libc.inotify_add_watch(ifd, path.encode(), mask), path)] = path
os.makedirs("/home/user/app", exist_ok=True)
with open("/home/user/app/main.js", "w") as f:
    f.write("console.log(1)\n")
watch("/home/user/app", IN_CREATE)
watch("/home/user/app/main.js", IN_MODIFY)
watch("/tmp", IN_CREATE)
watch("/etc", IN_CREATE)
os.makedirs("/var/lib/myapp", exist_ok=True)
watch("/var/lib/myapp", IN_CREATE)
# A recursive watcher (what Vite, nodemon or watchdog set up): one watch per directory.
for i in range(40):
    for j in range(50):
        os.makedirs("/home/user/app/src/d%d/e%d" % (i, j), exist_ok=True)
for root, dirs, files in os.walk("/home/user/app/src"):
    watch(root, IN_CREATE)
seen = []
def drain():
    try:
        buf = os.read(ifd, 1 << 16)
    except BlockingIOError:
        return
    i = 0
    while i < len(buf):
        wd, mask, cookie, n = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode()
        seen.append((watched.get(wd), name))
        i += 16 + n
result = len(watched)
"#,
    );
    assert!(watches.as_u64().unwrap() > 2000, "{watches} watches");

    pause_and_resume(&sb);

    sb.exec(
        r#"
open("/home/user/app/new.txt", "w").close()
open("/tmp/new.txt", "w").close()
open("/var/lib/myapp/state", "w").close()
open("/home/user/app/src/d39/e49/deep.txt", "w").close()
with open("/home/user/app/main.js", "a") as f:
    f.write("console.log(2)\n")
"#,
    );
    wait_for(
        &sb,
        10,
        "the watcher to see every change made after the resume",
        r#"
drain()
want = {("/home/user/app", "new.txt"), ("/tmp", "new.txt"), ("/var/lib/myapp", "state"),
        ("/home/user/app/src/d39/e49", "deep.txt"), ("/home/user/app/main.js", "")}
result = want <= set(seen)
"#,
    );
}

#[test]
fn stopped_processes_stay_stopped_across_a_pause_and_continue_on_sigcont() {
    let sb = lab(Resources::default());
    sb.exec(
        r#"
import pty
stopped = subprocess.Popen(["sleep", "1001"])
os.kill(stopped.pid, signal.SIGSTOP)
# A job suspended with Ctrl-Z in an interactive shell on a PTY.
shell, master = pty.fork()
if shell == 0:
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
os.set_blocking(master, False)
def drain_pty():
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except (BlockingIOError, OSError):
            return out
        if not chunk:
            return out
        out += chunk
os.write(master, b"sleep 1002\n")
"#,
    );
    wait_for(
        &sb,
        10,
        "the job to start in the shell",
        "drain_pty(); job = find_pid(['sleep', '1002']); result = job is not None",
    );
    sb.exec("os.write(master, b'\\x1a'); result = None");
    wait_for(
        &sb,
        10,
        "Ctrl-Z to stop the job",
        "drain_pty(); result = proc_state(job) == 'T' and proc_state(stopped.pid) == 'T'",
    );

    // The runtime's own CRIU config (freeze-cgroup on the cgroup2 freezer) and its
    // cgroup2 freeze before the dump are what keep this from hanging.
    let conf = data_dir()
        .join("sandboxes")
        .join(sb.id().as_str())
        .join("criu.conf");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        stasis_runtime::oci::criu_conf(stasis_runtime::oci::CRIU_CONF, sb.id())
    );
    pause_and_resume_within(&sb, std::time::Duration::from_secs(60));

    assert_eq!(
        sb.exec("result = [proc_state(stopped.pid), proc_state(job)]"),
        json!(["T", "T"]),
        "both are still stopped after the resume"
    );
    sb.exec("os.kill(stopped.pid, signal.SIGCONT); os.write(master, b'fg\\n')");
    wait_for(
        &sb,
        10,
        "SIGCONT and `fg` to continue them",
        "drain_pty(); result = proc_state(stopped.pid) == 'S' and proc_state(job) == 'S'",
    );
}

#[test]
fn an_open_deleted_file_larger_than_256_mib_survives() {
    let sb = lab(Resources {
        memory_bytes: 1024 * Resources::MIB,
        ..Resources::default()
    });
    let digest = sb.exec(
        r#"
import hashlib
ghost = open("/tmp/scratch.bin", "w+b")
chunk = os.urandom(1 << 20)
h = hashlib.sha256()
for i in range(300):
    block = chunk[i:] + chunk[:i]
    ghost.write(block)
    h.update(block)
ghost.flush()
os.unlink("/tmp/scratch.bin")
result = h.hexdigest()
"#,
    );
    pause_and_resume(&sb);
    let after = sb.exec(
        r#"
ghost.seek(0)
h = hashlib.sha256()
while True:
    block = ghost.read(1 << 20)
    if not block:
        break
    h.update(block)
result = [h.hexdigest(), os.path.exists("/tmp/scratch.bin"), os.fstat(ghost.fileno()).st_nlink]
"#,
    );
    assert_eq!(after, json!([digest, false, 0]));
}

#[test]
fn vsock_sockets_are_refused() {
    let sb = lab(Resources::default());
    let r = sb.exec(
        r#"
result = []
for call in (lambda: socket.socket(40, socket.SOCK_STREAM), lambda: socket.socketpair(40)):
    try:
        call().close()
        result.append("created")
    except OSError as e:
        result.append(e.errno)
# Other families are untouched.
socket.socket(socket.AF_UNIX).close()
socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
socket.socketpair().__iter__().__next__().close()
"#,
    );
    assert_eq!(r, json!([1, 1]), "EPERM for socket and socketpair");
}

#[test]
fn sudo_works_for_the_user_account() {
    let sb = lab(Resources::default());
    let r = sb.exec(
        r#"
p = subprocess.run(["sudo", "-n", "id", "-u"], user=1000, group=1000, extra_groups=[],
                   env={"PATH": "/usr/bin:/bin", "HOME": "/home/user"}, capture_output=True, text=True)
result = [p.returncode, p.stdout.strip(), p.stderr.strip(), os.getuid()]
"#,
    );
    assert_eq!(r[0], 0, "sudo failed: {r}");
    assert_eq!(r[1], "0", "{r}");
}

#[test]
fn preflight_names_a_traced_process_and_its_tracer() {
    let sb = lab(Resources::default());
    assert_eq!(
        stasis_runtime::preflight::check(sb.init_pid(), Freezer::CgroupV2).unwrap(),
        stasis_runtime::preflight::Obstacles::default(),
        "a fresh sandbox has no obstacles"
    );
    // A tracer (what strace and gdb do, through ptrace) attached to its child.
    let pids = sb.exec(
        r#"
tracer = subprocess.Popen(["python3", "-c", """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
child = os.fork()
if child == 0:
    while True:
        time.sleep(1)
if libc.ptrace(0x4206, child, None, None) != 0:  # PTRACE_SEIZE
    sys.exit(ctypes.get_errno())
print(child, flush=True)
while True:
    time.sleep(1)
"""], stdout=subprocess.PIPE, text=True)
traced = int(tracer.stdout.readline())
result = [tracer.pid, traced]
"#,
    );
    let (tracer, traced) = (pids[0].as_i64().unwrap(), pids[1].as_i64().unwrap());
    let found = stasis_runtime::preflight::check(sb.init_pid(), Freezer::CgroupV2).unwrap();
    assert_eq!(
        found.to_string(),
        format!(
            "pid {tracer} (python3) is tracing pid {traced} (python3): ptraced processes \
             cannot be paused; stop the tracer and retry"
        )
    );
    // A stopped process is in the way only of a dump under the cgroup-v1 freezer.
    let stopped = sb.exec(
        "s = subprocess.Popen(['sleep', '1004']); os.kill(s.pid, signal.SIGSTOP); result = s.pid",
    );
    wait_for(&sb, 10, "the stop", "result = proc_state(s.pid) == 'T'");
    let v1 = stasis_runtime::preflight::check(sb.init_pid(), Freezer::CgroupV1).unwrap();
    assert!(
        v1.to_string().ends_with(&format!(
            "pid {stopped} (sleep) is stopped (SIGSTOP or Ctrl-Z), which this host cannot \
             pause; continue it (kill -CONT {stopped}) or end it, and retry"
        )),
        "{v1}"
    );
    sb.exec("s.kill(); s.wait(); result = None");
    // Once the tracer is gone, nothing is in the way and the pause works.
    sb.exec("tracer.kill(); tracer.wait(); result = None");
    wait_until(10, "the trace to end", || {
        stasis_runtime::preflight::check(sb.init_pid(), Freezer::CgroupV2)
            .unwrap()
            .is_empty()
    });
    pause_and_resume(&sb);
}

/// A child process of the test, killed when the guard drops.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn preflight_names_a_socket_criu_cannot_save() {
    // Sandboxes cannot open AF_VSOCK sockets; the host can (if its kernel has vsock), and
    // the scan is the same in any pid namespace: here the host's, with a host process.
    use std::io::BufRead;
    let mut child = Child(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import socket, sys\n\
                 try:\n    s = socket.socket(40, socket.SOCK_STREAM)\n\
                 except OSError:\n    print('none', flush=True); sys.exit()\n\
                 print(s.fileno(), flush=True)\nsys.stdin.read()\n",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() == "none" {
        eprintln!("skipped: this kernel has no AF_VSOCK");
        return;
    }
    let pid = child.0.id() as i32;
    let found = stasis_runtime::preflight::check(pid, Freezer::CgroupV2).unwrap();
    let theirs: Vec<String> = found
        .0
        .iter()
        .filter(|o| {
            matches!(o, stasis_runtime::preflight::Obstacle::Socket { process, .. }
                if process.host_pid == pid)
        })
        .map(|o| o.to_string())
        .collect();
    assert_eq!(
        theirs,
        vec![format!(
            "pid {pid} (python3) holds a socket of protocol AF_VSOCK (fd {}), which cannot \
             be saved; close it and retry",
            line.trim()
        )],
        "{found}"
    );
}

#[test]
fn threads_shared_memory_memfd_and_mapped_files_survive() {
    let sb = lab(Resources::default());
    sb.exec(
        r#"
import concurrent.futures, mmap, threading
from multiprocessing import shared_memory
# A thread pool whose workers are parked on a barrier-like event.
pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
gate = threading.Event()
futures = [pool.submit(lambda i=i: (gate.wait(), threading.get_native_id(), i)[1:]) for i in range(8)]
# POSIX shared memory (a file in /dev/shm), written by a child process.
posix = shared_memory.SharedMemory(name="lab-posix", create=True, size=1 << 20)
subprocess.run(["python3", "-c", "from multiprocessing import shared_memory as s; m = s.SharedMemory('lab-posix'); m.buf[:5] = b'posix'; m.close()"], check=True)
# SysV shared memory, attached here.
libc.shmget.restype = ctypes.c_int
libc.shmat.restype = ctypes.c_void_p
shmid = check(libc.shmget(0x5741, 1 << 20, 0o1600), "shmget")
addr = libc.shmat(shmid, None, 0)
ctypes.memmove(addr, b"sysv", 4)
# memfd, mapped.
mfd = os.memfd_create("lab-memfd")
os.ftruncate(mfd, 1 << 20)
mm_memfd = mmap.mmap(mfd, 1 << 20)
mm_memfd[:5] = b"memfd"
# A large shared file mapping, modified in memory.
big = open("/home/user/big.dat", "w+b")
big.truncate(256 << 20)
mm_big = mmap.mmap(big.fileno(), 256 << 20)
for off in range(0, 256 << 20, 1 << 20):
    mm_big[off:off + 8] = off.to_bytes(8, "little")
result = None
"#,
    );
    pause_and_resume(&sb);
    let r = sb.exec(
        r#"
gate.set()
tids = sorted(f.result(timeout=10)[0] for f in futures)
ok_big = all(mm_big[off:off + 8] == off.to_bytes(8, "little") for off in range(0, 256 << 20, 1 << 20))
mm_big.flush()
big.seek(255 << 20)
on_disk = big.read(8) == (255 << 20).to_bytes(8, "little")
result = [len(set(tids)), bytes(posix.buf[:5]).decode(), ctypes.string_at(addr, 4).decode(),
          mm_memfd[:5].decode(), os.pread(mfd, 5, 0).decode(), ok_big, on_disk]
"#,
    );
    assert_eq!(r, json!([8, "posix", "sysv", "memfd", "memfd", true, true]));
}

#[test]
fn event_timer_and_signal_fds_epoll_pipes_and_fifos_survive() {
    let sb = lab(Resources::default());
    sb.exec(
        r#"
import select
efd = os.eventfd(5, os.EFD_NONBLOCK)
# timerfd: a periodic 50 ms timer.
libc.timerfd_create.restype = ctypes.c_int
tfd = check(libc.timerfd_create(1, 0o4000), "timerfd_create")  # CLOCK_MONOTONIC, TFD_NONBLOCK
spec = (ctypes.c_long * 4)(0, 50_000_000, 0, 50_000_000)
check(libc.timerfd_settime(tfd, 0, spec, None), "timerfd_settime")
# signalfd for SIGUSR1.
mask = (ctypes.c_ulong * 16)(1 << (signal.SIGUSR1 - 1))
sfd = check(libc.signalfd(-1, mask, 0o4000), "signalfd")  # SFD_NONBLOCK
# epoll over a pipe with data in flight.
pr, pw = os.pipe()
os.write(pw, b"in the pipe")
ep = select.epoll()
ep.register(pr, select.EPOLLIN)
ep.register(efd, select.EPOLLIN)
# A FIFO held open at both ends, with data in it.
os.mkfifo("/tmp/lab.fifo")
fr = os.open("/tmp/lab.fifo", os.O_RDONLY | os.O_NONBLOCK)
fw = os.open("/tmp/lab.fifo", os.O_WRONLY)
os.write(fw, b"in the fifo")
result = None
"#,
    );
    pause_and_resume(&sb);
    let r = sb.exec(
        r#"
ready = sorted(fd for fd, ev in ep.poll(1))
count = int.from_bytes(os.read(efd, 8), "little")
# The periodic timer fires again: wait (at most 5 s) until it is readable.
select.select([tfd], [], [], 5)
ticks = int.from_bytes(os.read(tfd, 8), "little")
# Each request runs on a new thread: block SIGUSR1 in this one, then signal it.
import threading
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
info = os.read(sfd, 128)
signo = struct.unpack_from("I", info)[0]
result = [ready == sorted([pr, efd]), count, ticks >= 1, signo == signal.SIGUSR1,
          os.read(pr, 100).decode(), os.read(fr, 100).decode()]
"#,
    );
    assert_eq!(
        r,
        json!([true, 5, true, true, "in the pipe", "in the fifo"])
    );
}

#[test]
fn unix_and_udp_sockets_keep_their_queued_data() {
    let sb = lab(Resources::default());
    sb.exec(
        r#"
# Stream pair, a path-bound datagram socket, an abstract listener with a connected peer,
# and a UDP socket with a datagram waiting.
sa, sb_ = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
sa.sendall(b"stream")
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind("/tmp/lab.dgram")
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"datagram", "/tmp/lab.dgram")
ab = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ab.bind("\0lab-abstract")
ab.listen()
abc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
abc.connect("\0lab-abstract")
abs_srv, _ = ab.accept()
abc.sendall(b"abstract")
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 5353))
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"udp", ("127.0.0.1", 5353))
result = None
"#,
    );
    pause_and_resume(&sb);
    let r = sb.exec(
        r#"
for s in (sb_, dg, abs_srv):
    s.settimeout(5)
got = []
for s in (sb_, dg, abs_srv):
    try:
        got.append(s.recv(100))
    except OSError as e:
        got.append(repr(e).encode())
# And they still work both ways, new connections included.
sb_.sendall(b"back")
late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
late.connect("\0lab-abstract")
# CRIU drops the receive queue of UDP sockets ("Read queue is dropped"): datagrams may be
# lost by contract. The socket keeps its address and receives what is sent after.
udp.setblocking(False)
try:
    stale = udp.recv(100)
except BlockingIOError:
    stale = None
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"udp after", ("127.0.0.1", 5353))
udp.settimeout(5)
got.append(udp.recv(100))
result = [g.decode() for g in got] + [stale, sa.recv(100).decode(), ab.accept()[0] is not None]
"#,
    );
    assert_eq!(
        r,
        json!([
            "stream",
            "datagram",
            "abstract",
            "udp after",
            null,
            "back",
            true
        ])
    );
}

#[test]
fn locks_zombies_a_deleted_cwd_and_an_open_sqlite_writer_survive() {
    let sb = lab(Resources::default());
    sb.exec(
        r#"
import fcntl, sqlite3
# Locks held by a child: an flock and a POSIX record lock.
os.makedirs("/home/user/db", exist_ok=True)
holder = subprocess.Popen(["python3", "-c", """
import fcntl, sys
a = open('/home/user/db/flock', 'w'); fcntl.flock(a, fcntl.LOCK_EX)
b = open('/home/user/db/posix', 'w'); fcntl.lockf(b, fcntl.LOCK_EX)
print('locked', flush=True); sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline() == "locked\n"
# A zombie: a child that exited and is not reaped yet.
zombie = subprocess.Popen(["true"])
# A process whose working directory was deleted under it.
os.makedirs("/home/user/gone")
in_gone = subprocess.Popen(["sleep", "1003"], cwd="/home/user/gone")
os.rmdir("/home/user/gone")
# SQLite in WAL mode with a write transaction open.
db = sqlite3.connect("/home/user/db/app.db", isolation_level=None, check_same_thread=False)
db.execute("pragma journal_mode=wal")
db.execute("create table t (v text)")
db.execute("insert into t values ('committed')")
db.execute("begin immediate")
db.execute("insert into t values ('pending')")
result = None
"#,
    );
    wait_for(
        &sb,
        10,
        "the child to become a zombie",
        "result = proc_state(zombie.pid) == 'Z'",
    );
    pause_and_resume(&sb);
    let r = sb.exec(
        r#"
def try_lock(path, how):
    p = subprocess.run(["python3", "-c", "import fcntl, sys; f = open(sys.argv[1], 'w'); %s" % how, path],
                       capture_output=True)
    return "free" if p.returncode == 0 else "held"
locks = [try_lock("/home/user/db/flock", "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"),
         try_lock("/home/user/db/posix", "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)")]
zstate = proc_state(zombie.pid)
zcode = zombie.wait(timeout=5)
cwd = os.readlink("/proc/%d/cwd" % in_gone.pid)
other = sqlite3.connect("/home/user/db/app.db", timeout=0)
before = [r[0] for r in other.execute("select v from t order by rowid")]
db.execute("commit")
after = [r[0] for r in other.execute("select v from t order by rowid")]
holder.stdin.close(); holder.wait(timeout=5)
result = [locks, zstate, zcode, cwd, before, after,
          try_lock("/home/user/db/flock", "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)")]
"#,
    );
    assert_eq!(
        r,
        json!([
            ["held", "held"],
            "Z",
            0,
            "/home/user/gone (deleted)",
            ["committed"],
            ["committed", "pending"],
            "free"
        ])
    );
}
